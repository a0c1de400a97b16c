//! The HTTP v1 message from rendered push content and the GCM and default push blocks.

use std::collections::HashMap;

use super::FcmError;
use crate::proto::v1::{DefaultPushNotificationMessage, GcmMessage, PushAction};

/// One FCM message body (`{"message": {...}}` without the token, which is added per device).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub device_token: String,
    /// The `message` object's fields besides `token`.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// The FCM HTTP v1 message for a device token, from the rendered push content by part
/// (`title`, `body`, `sound`, `url`, `image_url`, `raw_content`) and the GCM and default push
/// blocks' options: a silent push carries data only; `ios` (an iOS device registered with FCM)
/// adds the `apns` override with the same choices APNs headers and aps would carry.
pub fn message(
    parts: &HashMap<String, String>,
    g: &GcmMessage,
    d: &DefaultPushNotificationMessage,
    ios: bool,
    token: &str,
    context: &HashMap<String, String>,
) -> Result<Message, FcmError> {
    use serde_json::{json, Map, Value};
    let pick = |name: &str| parts.get(name).cloned();
    let mut fields = Map::new();
    if let Some(raw) = pick("raw_content") {
        let v: Value = serde_json::from_str(&raw).map_err(FcmError::RawContent)?;
        let inner = v.get("message").cloned().unwrap_or(v);
        let Value::Object(m) = inner else { return Err(FcmError::RawContentNotObject) };
        fields = m;
    } else {
        let silent = g.silent_push || d.silent_push;
        if !silent {
            let mut n = Map::new();
            for (k, part) in [("title", "title"), ("body", "body"), ("image", "image_url")] {
                if let Some(v) = pick(part) {
                    n.insert(k.into(), Value::String(v));
                }
            }
            if !n.is_empty() {
                fields.insert("notification".into(), Value::Object(n));
            }
        }
        let data = if g.data.is_empty() { &d.data } else { &g.data };
        let mut data: Map<String, Value> = data.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let action = if g.action != 0 { g.action } else { d.action };
        if let Some(url) = pick("url").filter(|_| action == PushAction::DeepLink as i32 || action == PushAction::Url as i32) {
            data.insert("pinpoint.deeplink".into(), Value::String(url));
        }
        // The sender's Context under pinpoint., as Pinpoint flattens data.pinpoint for FCM.
        for (k, v) in context {
            data.insert(format!("pinpoint.{k}"), Value::String(v.clone()));
        }
        if !data.is_empty() {
            fields.insert("data".into(), Value::Object(data));
        }
        let mut android = Map::new();
        match g.priority.to_ascii_lowercase().as_str() {
            "high" => drop(android.insert("priority".into(), json!("HIGH"))),
            "normal" => drop(android.insert("priority".into(), json!("NORMAL"))),
            _ => {}
        }
        if g.time_to_live > 0 {
            android.insert("ttl".into(), Value::String(format!("{}s", g.time_to_live)));
        }
        if !g.collapse_key.is_empty() {
            android.insert("collapse_key".into(), Value::String(g.collapse_key.clone()));
        }
        if !g.restricted_package_name.is_empty() {
            android.insert("restricted_package_name".into(), Value::String(g.restricted_package_name.clone()));
        }
        // The notification's sound and small icon (a drawable of the app, Pinpoint's
        // IconReference).
        let mut shown = Map::new();
        if let Some(sound) = pick("sound").filter(|_| !silent) {
            shown.insert("sound".into(), Value::String(sound));
        }
        if !g.icon_reference.is_empty() && !silent {
            shown.insert("icon".into(), Value::String(g.icon_reference.clone()));
        }
        if !shown.is_empty() {
            android.insert("notification".into(), Value::Object(shown));
        }
        if !android.is_empty() {
            fields.insert("android".into(), Value::Object(android));
        }
        // An iOS device registered with FCM: the same choices as APNs headers and aps.
        if ios {
            let mut headers = Map::new();
            let mut aps = Map::new();
            if silent {
                aps.insert("content-available".into(), json!(1));
                headers.insert("apns-push-type".into(), json!("background"));
                headers.insert("apns-priority".into(), json!("5"));
            } else {
                match g.priority.to_ascii_lowercase().as_str() {
                    "high" => drop(headers.insert("apns-priority".into(), json!("10"))),
                    "normal" => drop(headers.insert("apns-priority".into(), json!("5"))),
                    _ => {}
                }
                if let Some(sound) = pick("sound") {
                    aps.insert("sound".into(), Value::String(sound));
                }
            }
            if g.time_to_live > 0 {
                let at = chrono::Utc::now().timestamp() + i64::from(g.time_to_live);
                headers.insert("apns-expiration".into(), Value::String(at.to_string()));
            }
            if !g.collapse_key.is_empty() {
                headers.insert("apns-collapse-id".into(), Value::String(g.collapse_key.clone()));
            }
            let mut apns = Map::new();
            if !headers.is_empty() {
                apns.insert("headers".into(), Value::Object(headers));
            }
            if !aps.is_empty() {
                apns.insert("payload".into(), json!({ "aps": aps }));
            }
            if !apns.is_empty() {
                fields.insert("apns".into(), Value::Object(apns));
            }
        }
    }
    Ok(Message { device_token: token.to_string(), fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> HashMap<String, String> {
        [("title", "Sale"), ("body", "Half off"), ("sound", "chime")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn icon_and_restricted_package_reach_android() {
        let g = GcmMessage { icon_reference: "ic_bell".into(), restricted_package_name: "com.shop.app".into(), ..Default::default() };
        let m = message(&parts(), &g, &Default::default(), false, "tok", &HashMap::new()).unwrap();
        let android = &m.fields["android"];
        assert_eq!(android["restricted_package_name"], "com.shop.app");
        assert_eq!((android["notification"]["icon"].as_str(), android["notification"]["sound"].as_str()), (Some("ic_bell"), Some("chime")));
        assert_eq!(m.fields["notification"]["title"], "Sale");
    }

    #[test]
    fn a_silent_push_from_either_block_is_data_only() {
        for (g, d) in [
            (
                GcmMessage { silent_push: true, icon_reference: "ic_bell".into(), ..Default::default() },
                DefaultPushNotificationMessage::default(),
            ),
            (GcmMessage::default(), DefaultPushNotificationMessage { silent_push: true, ..Default::default() }),
        ] {
            let m = message(&parts(), &g, &d, true, "tok", &HashMap::new()).unwrap();
            assert!(m.fields.get("notification").is_none(), "{:?}", m.fields);
            assert!(m.fields.get("android").and_then(|a| a.get("notification")).is_none(), "{:?}", m.fields);
            assert_eq!(m.fields["apns"]["payload"]["aps"]["content-available"], 1);
        }
    }
}
