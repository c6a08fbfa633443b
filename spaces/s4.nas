# RobustDARTS S4: DARTS with {noise, sep_conv_3x3} on every edge; `noise` returns fresh N(0, 1).
space s4 extends darts
ops [noise, sep_conv_3x3]
