//! What each harvest kind adds to the agent's generic fetch-and-deliver
//! pipeline. For now: split ZIM archives ([`zim`]).

pub mod zim;
