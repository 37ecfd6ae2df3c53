# System declarations (cimport only): one .pxd per C header, declaring only what nkstream uses.
