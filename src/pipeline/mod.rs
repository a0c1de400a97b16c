//! The send pipeline's shared front: what every producer (SendMessages, SendUsersMessages,
//! campaign runs) uses to turn "this message, these recipients" into payloads for the
//! dispatch engine — the compiled content ([`compose`]).

pub mod compose;
