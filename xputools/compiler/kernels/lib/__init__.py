"""The kernel library: the pieces several kernel families share, so that a kernel module holds only
its op family and no kernel module imports another.

- `dims`: merging (count, stride...) dims, row-major and broadcast strides, splitting dims into loops
  and blocks;
- `ap`: HBM access patterns into values, SBUF tiles and views of them, tile loads and stores;
- `pools`: buffers allocated once and reused round-robin (`SlotPool`), and fresh ring tiles that
  know when the ring may reuse them (`RingTiles`);
- `pe`: PE sizes, operand dtypes, K-major matrix loads;
- `epilogue`: bias, scale and fused activation while evacuating PSUM;
- `conv`: convolution geometry, channel units, weight blocks and zero-padded input bands;
- `datamove`: strided HBM-to-HBM copies and constant fills;
- `registry`: `@kernel("OpType")` and the KERNELS table it fills;
- `rows`: the row planner of reductions (and of Softmax, LayerNorm and global pools) and the
  tiled reduction itself.
"""
