//! placeholder module filled in below
