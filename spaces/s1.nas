# RobustDARTS S1 (Zela et al., ICLR 2020): DARTS with its own pair of ops on every edge.
# Within each pair the order is the alpha column order of the original code.
space s1 extends darts

cell normal {
  edge 0 -> 2 [skip_connect, dil_conv_3x3]
  edge 1 -> 2 [skip_connect, dil_conv_5x5]
  edge 0 -> 3 [skip_connect, dil_conv_5x5]
  edge 1 -> 3 [skip_connect, sep_conv_3x3]
  edge 2 -> 3 [skip_connect, dil_conv_3x3]
  edge 0 -> 4 [max_pool_3x3, skip_connect]
  edge 1 -> 4 [skip_connect, sep_conv_3x3]
  edge 2 -> 4 [skip_connect, sep_conv_3x3]
  edge 3 -> 4 [skip_connect, dil_conv_3x3]
  edge 0 -> 5 [skip_connect, sep_conv_3x3]
  edge 1 -> 5 [max_pool_3x3, skip_connect]
  edge 2 -> 5 [skip_connect, dil_conv_3x3]
  edge 3 -> 5 [dil_conv_3x3, dil_conv_5x5]
  edge 4 -> 5 [dil_conv_3x3, dil_conv_5x5]
}

cell reduce {
  edge 0 -> 2 [max_pool_3x3, avg_pool_3x3]
  edge 1 -> 2 [max_pool_3x3, dil_conv_3x3]
  edge 0 -> 3 [max_pool_3x3, avg_pool_3x3]
  edge 1 -> 3 [max_pool_3x3, avg_pool_3x3]
  edge 2 -> 3 [skip_connect, dil_conv_5x5]
  edge 0 -> 4 [max_pool_3x3, avg_pool_3x3]
  edge 1 -> 4 [max_pool_3x3, sep_conv_3x3]
  edge 2 -> 4 [skip_connect, dil_conv_3x3]
  edge 3 -> 4 [skip_connect, dil_conv_5x5]
  edge 0 -> 5 [max_pool_3x3, avg_pool_3x3]
  edge 1 -> 5 [max_pool_3x3, avg_pool_3x3]
  edge 2 -> 5 [skip_connect, dil_conv_5x5]
  edge 3 -> 5 [skip_connect, dil_conv_5x5]
  edge 4 -> 5 [skip_connect, dil_conv_5x5]
}
