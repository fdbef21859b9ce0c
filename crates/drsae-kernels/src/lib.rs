//! drsae kernels.
