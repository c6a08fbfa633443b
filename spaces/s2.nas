# RobustDARTS S2: DARTS with {skip_connect, sep_conv_3x3} on every edge of both cells.
space s2 extends darts
ops [skip_connect, sep_conv_3x3]
