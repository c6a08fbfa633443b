# The DARTS CNN search space (Liu, Simonyan & Yang, ICLR 2019).
# Op order is the alpha column order of the original code.
space darts

ops [none, max_pool_3x3, avg_pool_3x3, skip_connect,
     sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5]

# Search-time BN: ops without affine, running statistics kept, BN appended after pooling ops.
bn { affine false; track_stats true; pool_bn true }

# Two inputs (c_{k-2}, c_{k-1}), four intermediate nodes, output = concat of nodes 2..5.
cell normal(inputs 2, nodes 4) {
  edges dense
  output concat
  derive top 2
}

# Same topology; stride 2 on the edges that leave the two inputs.
cell reduce(inputs 2, nodes 4, reduction) {
  edges dense
  output concat
  derive top 2
}

# 8 cells, reductions at L//3 and 2L//3 (cells 2 and 5), widths doubling at each.
network(C = 16, L = 8) {
  stem conv3x3(3C)
  repeat L//3 normal(C)
  reduce(2C)
  repeat 2L//3 - L//3 - 1 normal(2C)
  reduce(4C)
  repeat L - 2L//3 - 1 normal(4C)
  head gap linear
}
