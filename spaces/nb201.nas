# NAS-Bench-201 (Dong & Yang, ICLR 2020): one cell type shared by all 15 cells.
space nb201

ops [none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3]

# Search-time BN of the NB201 DARTS baselines: no affine; running statistics kept
# (the `BN` flag of AutoDL's scripts; set track_stats false for batch statistics).
bn { affine false; track_stats true; pool_bn false }

# One input, three computed nodes, every edge j -> i for j < i; the output is node 3.
# Edge order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2 is the architecture-string order.
cell cell(inputs 1, nodes 3) {
  edges dense
  output last
  derive argmax
}

network(C = 16, N = 5) {
  stem conv3x3(C)
  repeat N cell(C)
  resblock(2C, stride=2)
  repeat N cell(2C)
  resblock(4C, stride=2)
  repeat N cell(4C)
  head bn relu gap linear
}
