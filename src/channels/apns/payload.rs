//! The notification: a2's payload builder over the rendered push content.

use std::collections::HashMap;

use super::{ApnsError, Kind};
use crate::proto::v1::{ApnsMessage, DefaultPushNotificationMessage, PushAction};

/// One notification, ready to go.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Push {
    pub device_token: String,
    pub sandbox: bool,
    pub voip: bool,
    pub push_type: String,
    /// 10 or 5 (apns-priority); `None`: Apple's default.
    pub priority: Option<u8>,
    /// apns-expiration (unix seconds; 0: deliver once or drop).
    pub expiration: Option<i64>,
    pub collapse_id: Option<String>,
    /// The JSON payload.
    pub body: Vec<u8>,
}

/// The APNs notification for a device token, built with a2's payload builder from the rendered
/// push content by part (the APNs block's parts, else the default block's) and the APNs
/// message's options (badge, category, thread id, push type, priority, expiration, collapse id).
pub fn push(
    parts: &HashMap<String, String>,
    a: &ApnsMessage,
    d: &DefaultPushNotificationMessage,
    kind: Kind,
    token: &str,
    context: &HashMap<String, String>,
) -> Result<Push, ApnsError> {
    use a2::request::notification::NotificationBuilder as _;
    use a2::request::payload::PayloadLike as _;
    let pick = |name: &str| parts.get(name).map(String::as_str);
    let silent = a.silent_push || d.silent_push;
    let body = match pick("raw_content") {
        Some(raw) => {
            let v: serde_json::Value = serde_json::from_str(raw).map_err(ApnsError::RawContent)?;
            v.to_string()
        }
        None => {
            let mut b = a2::DefaultNotificationBuilder::new();
            if silent {
                b = b.set_content_available();
            } else {
                if let Some(v) = pick("title") {
                    b = b.set_title(v);
                }
                if let Some(v) = pick("body") {
                    b = b.set_body(v);
                }
                if let Some(v) = pick("sound") {
                    b = b.set_sound(v);
                }
            }
            if a.badge > 0 {
                b = b.set_badge(a.badge as u32);
            }
            if !a.category.is_empty() {
                b = b.set_category(&a.category);
            }
            if pick("image_url").is_some() {
                b = b.set_mutable_content();
            }
            let mut payload = b.build(token, Default::default());
            let data = if a.data.is_empty() { &d.data } else { &a.data };
            for (k, v) in data {
                payload.data.insert(k.as_str(), serde_json::Value::String(v.clone()));
            }
            let action = if a.action != 0 { a.action } else { d.action };
            // data.pinpoint: the deep link and the sender's Context, as Pinpoint puts them.
            let mut pinpoint: serde_json::Map<String, serde_json::Value> =
                context.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
            if let Some(url) = pick("url").filter(|_| action == PushAction::DeepLink as i32 || action == PushAction::Url as i32) {
                pinpoint.insert("deeplink".into(), serde_json::Value::String(url.to_string()));
            }
            if !pinpoint.is_empty() {
                payload.data.insert("pinpoint", serde_json::Value::Object(pinpoint));
            }
            if let Some(img) = pick("image_url") {
                payload.data.insert("media_url", serde_json::Value::String(img.to_string()));
            }
            if !a.thread_id.is_empty() {
                payload.data.insert("thread-id", serde_json::Value::String(a.thread_id.clone()));
            }
            let mut json = payload.to_json_string().map_err(|e| ApnsError::Payload(e.to_string()))?;
            if !a.thread_id.is_empty() {
                // thread-id belongs in aps.
                let mut v: serde_json::Value = serde_json::from_str(&json).map_err(|e| ApnsError::Payload(e.to_string()))?;
                if let Some(t) = v.as_object_mut().and_then(|o| o.remove("thread-id")) {
                    v["aps"]["thread-id"] = t;
                }
                json = v.to_string();
            }
            json
        }
    };
    let voip = kind.voip;
    let push_type = if !a.apns_push_type.is_empty() {
        a.apns_push_type.clone()
    } else if voip {
        "voip".into()
    } else if silent {
        "background".into()
    } else {
        String::new()
    };
    let priority = match a.priority.as_str() {
        "10" => Some(10),
        "5" => Some(5),
        _ if silent => Some(5),
        _ => None,
    };
    Ok(Push {
        device_token: token.to_string(),
        sandbox: kind.sandbox,
        voip,
        push_type,
        priority,
        expiration: (a.time_to_live > 0).then(|| chrono::Utc::now().timestamp() + i64::from(a.time_to_live)),
        collapse_id: Some(a.collapse_id.clone()).filter(|c| !c.is_empty()),
        body: body.into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> HashMap<String, String> {
        [("title", "Sale"), ("body", "Half off"), ("sound", "chime.caf")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn aps(p: &Push) -> serde_json::Value {
        serde_json::from_slice::<serde_json::Value>(&p.body).unwrap()["aps"].clone()
    }

    #[test]
    fn thread_category_and_push_type_reach_the_notification() {
        let a =
            ApnsMessage { thread_id: "order-7".into(), category: "INVITE".into(), apns_push_type: "alert".into(), ..Default::default() };
        let p = push(&parts(), &a, &Default::default(), Kind::default(), "tok", &HashMap::new()).unwrap();
        let aps = aps(&p);
        assert_eq!((aps["thread-id"].as_str(), aps["category"].as_str()), (Some("order-7"), Some("INVITE")), "{aps}");
        assert_eq!(aps["alert"]["title"], "Sale");
        assert_eq!((p.push_type.as_str(), p.priority), ("alert", None));
    }

    #[test]
    fn a_silent_push_from_either_block_carries_no_alert() {
        for (a, d) in [
            (ApnsMessage { silent_push: true, ..Default::default() }, DefaultPushNotificationMessage::default()),
            (ApnsMessage::default(), DefaultPushNotificationMessage { silent_push: true, ..Default::default() }),
        ] {
            let p = push(&parts(), &a, &d, Kind::default(), "tok", &HashMap::new()).unwrap();
            let aps = aps(&p);
            assert_eq!(aps["content-available"], 1, "{aps}");
            assert!(aps.get("alert").is_none() && aps.get("sound").is_none(), "{aps}");
            assert_eq!((p.push_type.as_str(), p.priority), ("background", Some(5)));
        }
    }
}
