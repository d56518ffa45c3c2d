//! ESP packet processing, no I/O.
