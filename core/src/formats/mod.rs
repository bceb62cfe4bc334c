//! The kinds' streaming format checks: fed every byte of a body in order, in
//! the same pass as the hasher, on the agent (refusing before upload) and on
//! the commander (its own copy, before landing).

pub mod bundle;
pub mod feed;
pub mod lfs;
pub mod zim;
