//! The send pipeline's shared front: what every producer (SendMessages, SendUsersMessages,
//! campaign runs) uses to turn "this message, these recipients" into jobs for the dispatch
//! engine — the compiled content ([`compose`]) and the delivery rules, outcome records and
//! rendering ([`planner`]). A producer decides to whom and when; the rest is here.

pub mod compose;
pub mod planner;
