//! The text message from rendered content and the SMS block's options.

/// One text message, ready to go.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Text {
    pub to: String,
    /// An origination number (E.164) or an alphanumeric sender id.
    pub from: String,
    pub body: String,
    /// TRANSACTIONAL or PROMOTIONAL (sent as the provider's message type hint when not
    /// transactional).
    pub promotional: bool,
}

impl Text {
    /// The text for `to` with a rendered body and the SMS message's options: its origination
    /// number, else its sender id (empty: the channel's), and its message type.
    pub fn new(to: &str, body: String, m: &crate::proto::v1::SmsMessage) -> Self {
        let from = if m.origination_number.is_empty() { m.sender_id.clone() } else { m.origination_number.clone() };
        Text { to: to.to_string(), from, body, promotional: m.message_type == crate::proto::v1::SmsMessageType::Promotional as i32 }
    }
}
