# RobustDARTS S3: DARTS with {none, skip_connect, sep_conv_3x3} on every edge of both cells.
space s3 extends darts
ops [none, skip_connect, sep_conv_3x3]
