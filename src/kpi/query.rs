//! Pinpoint's KPI names and how each is computed from the day counters of [`super`].
//!
//! A name is a base metric and an optional grouping: `email-open-rate`,
//! `email-open-rate-grouped-by-campaign`, `txn-emails-sent-grouped-by-date`. Application
//! metrics cover the app's campaigns (or, for `txn-*`, its transactional messages); campaign
//! metrics one campaign, grouped by date or by run (`campaign-activity`).
//!
//! Delivered means accepted by the provider and not reported bounced afterwards (Pinpoint's
//! "sent minus bounces"); rates are fractions (0.25), and a rate without messages to divide by
//! has no row, as Pinpoint answers null.

use std::collections::{BTreeMap, HashMap};

use crate::proto::v1::{ResultRow, ResultRowValue};
use crate::store::{Store, StoreError};

/// Counter sums of one row.
#[derive(Debug, Default)]
pub struct Sums(HashMap<String, i64>);

impl Sums {
    fn get(&self, counter: &str) -> f64 {
        self.0.get(counter).copied().unwrap_or(0) as f64
    }

    fn any(&self) -> bool {
        !self.0.is_empty()
    }

    fn add(&mut self, counter: &str, n: i64) {
        *self.0.entry(counter.to_string()).or_insert(0) += n;
    }
}

const GROUPS: [&str; 5] = ["email", "sms", "push", "custom", "voice"];

fn delivered(s: &Sums, g: &str) -> f64 {
    (s.get(&format!("ok.{g}")) - s.get(&format!("fhb.{g}")) - s.get(&format!("fsb.{g}"))).max(0.0)
}

fn delivered_all(s: &Sums) -> f64 {
    GROUPS.iter().map(|g| delivered(s, g)).sum()
}

fn sent_all(s: &Sums) -> f64 {
    GROUPS.iter().map(|g| s.get(&format!("sent.{g}"))).sum()
}

fn ratio(n: f64, d: f64) -> Option<f64> {
    (d > 0.0).then(|| n / d)
}

fn count(s: &Sums, n: f64) -> Option<f64> {
    s.any().then_some(n)
}

/// How a base metric's value comes from a row's sums.
#[derive(Clone, Copy)]
enum Calc {
    Value(fn(&Sums) -> Option<f64>),
    /// Distinct endpoints delivered to (HyperLogLog).
    UniqueDeliveries,
    /// One row per SMS error code.
    SmsErrors,
}

/// Who a metric covers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cover {
    Campaigns,
    Transactional,
}

struct Base {
    name: &'static str,
    cover: Cover,
    calc: Calc,
}

macro_rules! value {
    ($s:ident => $e:expr) => {
        Calc::Value(|$s: &Sums| $e)
    };
}

/// Metrics over campaigns, at both levels (the app's campaigns, or one campaign).
const CAMPAIGN_BASES: &[Base] = &[
    Base { name: "successful-delivery-rate", cover: Cover::Campaigns, calc: value!(s => ratio(delivered_all(s), sent_all(s))) },
    Base { name: "successful-deliveries", cover: Cover::Campaigns, calc: value!(s => count(s, delivered_all(s))) },
    Base { name: "attempted-deliveries", cover: Cover::Campaigns, calc: value!(s => count(s, sent_all(s))) },
    Base { name: "unique-deliveries", cover: Cover::Campaigns, calc: Calc::UniqueDeliveries },
    Base { name: "email-open-rate", cover: Cover::Campaigns, calc: value!(s => ratio(s.get("uopen.email"), delivered(s, "email"))) },
    Base { name: "direct-email-opens", cover: Cover::Campaigns, calc: value!(s => count(s, s.get("uopen.email"))) },
    Base { name: "email-click-rate", cover: Cover::Campaigns, calc: value!(s => ratio(s.get("uclick.email"), delivered(s, "email"))) },
    Base { name: "clicks", cover: Cover::Campaigns, calc: value!(s => count(s, s.get("click.email"))) },
    Base {
        name: "hard-bounce-rate",
        cover: Cover::Campaigns,
        calc: value!(s => ratio(s.get("hb.email") + s.get("fhb.email"), s.get("sent.email"))),
    },
    Base {
        name: "email-bounce-rate",
        cover: Cover::Campaigns,
        calc: value!(s => ratio(s.get("hb.email") + s.get("fhb.email"), s.get("sent.email"))),
    },
    Base { name: "email-complaint-rate", cover: Cover::Campaigns, calc: value!(s => ratio(s.get("complaint.email"), s.get("sent.email"))) },
    Base { name: "push-open-rate", cover: Cover::Campaigns, calc: value!(s => ratio(s.get("open.push"), delivered(s, "push"))) },
    Base { name: "direct-push-opens", cover: Cover::Campaigns, calc: value!(s => count(s, s.get("open.push"))) },
    // Herald's own (Pinpoint documents no in-app KPI): what apps report of their in-app
    // messages through PutEvents.
    Base { name: "in-app-message-displays", cover: Cover::Campaigns, calc: value!(s => count(s, s.get("display.inapp"))) },
    Base { name: "in-app-message-clicks", cover: Cover::Campaigns, calc: value!(s => count(s, s.get("click.inapp"))) },
    Base { name: "in-app-message-dismissals", cover: Cover::Campaigns, calc: value!(s => count(s, s.get("dismiss.inapp"))) },
    Base {
        name: "in-app-message-click-rate",
        cover: Cover::Campaigns,
        calc: value!(s => ratio(s.get("click.inapp"), s.get("display.inapp"))),
    },
];

/// The app's transactional messages (application level only).
const TXN_BASES: &[Base] = &[
    Base { name: "txn-emails-sent", cover: Cover::Transactional, calc: value!(s => count(s, s.get("sent.email"))) },
    Base { name: "txn-emails-delivered", cover: Cover::Transactional, calc: value!(s => count(s, delivered(s, "email"))) },
    Base {
        name: "txn-emails-delivery-rate",
        cover: Cover::Transactional,
        calc: value!(s => ratio(delivered(s, "email"), s.get("sent.email"))),
    },
    Base {
        name: "txn-emails-hard-bounced",
        cover: Cover::Transactional,
        calc: value!(s => count(s, s.get("hb.email") + s.get("fhb.email"))),
    },
    Base {
        name: "txn-emails-soft-bounced",
        cover: Cover::Transactional,
        calc: value!(s => count(s, s.get("sb.email") + s.get("fsb.email"))),
    },
    Base { name: "txn-emails-opened", cover: Cover::Transactional, calc: value!(s => count(s, s.get("uopen.email"))) },
    Base { name: "txn-emails-unique-opens", cover: Cover::Transactional, calc: value!(s => count(s, s.get("uopen.email"))) },
    Base { name: "txn-emails-clicked", cover: Cover::Transactional, calc: value!(s => count(s, s.get("click.email"))) },
    Base { name: "txn-emails-unique-clicks", cover: Cover::Transactional, calc: value!(s => count(s, s.get("uclick.email"))) },
    Base { name: "txn-emails-with-complaints", cover: Cover::Transactional, calc: value!(s => count(s, s.get("complaint.email"))) },
    Base {
        name: "txn-emails-complaint-rate",
        cover: Cover::Transactional,
        calc: value!(s => ratio(s.get("complaint.email"), s.get("sent.email"))),
    },
    Base { name: "txn-sms-sent", cover: Cover::Transactional, calc: value!(s => count(s, s.get("sent.sms"))) },
    Base { name: "txn-sms-delivered", cover: Cover::Transactional, calc: value!(s => count(s, delivered(s, "sms"))) },
    Base { name: "txn-sms-delivery-rate", cover: Cover::Transactional, calc: value!(s => ratio(delivered(s, "sms"), s.get("sent.sms"))) },
    Base { name: "txn-sms-error-distribution", cover: Cover::Transactional, calc: Calc::SmsErrors },
];

/// How rows are grouped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Grouping {
    None,
    Date,
    Campaign,
    CampaignActivity,
    JourneyActivity,
}

/// What a query is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Level {
    App,
    Campaign(String),
    Journey(String),
}

/// A parsed KPI name.
pub struct Kpi {
    base: &'static Base,
    grouping: Grouping,
}

impl std::fmt::Debug for Kpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kpi").field("base", &self.base.name).field("grouping", &self.grouping).finish()
    }
}

/// Why a KPI name is refused: a sentence naming what Herald offers instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KpiNameError(String);

impl KpiNameError {
    pub fn contains(&self, s: &str) -> bool {
        self.0.contains(s)
    }
}

/// The KPI a name asks for at `level`.
pub fn parse(level: &Level, name: &str) -> Result<Kpi, KpiNameError> {
    let refuse = |why: String| Err(KpiNameError(why));
    let (base_name, grouping) = match name.split_once("-grouped-by-") {
        None => (name, Grouping::None),
        Some((b, "date")) => (b, Grouping::Date),
        Some((b, "campaign")) if *level == Level::App => (b, Grouping::Campaign),
        Some((b, "campaign-activity")) if matches!(level, Level::Campaign(_)) => (b, Grouping::CampaignActivity),
        Some((b, "journey-activity")) if matches!(level, Level::Journey(_)) => (b, Grouping::JourneyActivity),
        Some((_, "country")) => {
            return refuse(format!(
                "{name}: Herald does not record the destination country of SMS messages, so it has no per-country metrics"
            ))
        }
        Some((_, g)) => return refuse(format!("{name}: no grouping by {g} for this metric")),
    };
    if base_name.starts_with("txn-sms-") && base_name.ends_with("-price") {
        return refuse(format!("{name}: Herald does not know the SMS provider's prices"));
    }
    let bases: Vec<&'static Base> = match level {
        Level::App => CAMPAIGN_BASES.iter().chain(TXN_BASES).collect(),
        Level::Campaign(_) | Level::Journey(_) => CAMPAIGN_BASES.iter().collect(),
    };
    let base = bases.into_iter().find(|b| b.name == base_name).ok_or_else(|| {
        KpiNameError({
            let mut known: Vec<&str> = CAMPAIGN_BASES.iter().map(|b| b.name).collect();
            if *level == Level::App {
                known.extend(TXN_BASES.iter().map(|b| b.name));
            }
            format!(
                "unknown kpi_name {name}: give one of {} (optionally -grouped-by-date or -grouped-by-{})",
                known.join(", "),
                match level {
                    Level::App => "campaign",
                    Level::Campaign(_) => "campaign-activity",
                    Level::Journey(_) => "journey-activity",
                }
            )
        })
    })?;
    if base.cover == Cover::Transactional && grouping == Grouping::Campaign {
        return refuse(format!("{name}: transactional messages belong to no campaign"));
    }
    if matches!(base.calc, Calc::SmsErrors) && grouping != Grouping::None {
        return refuse(format!("{name}: the error distribution is grouped by error code only"));
    }
    Ok(Kpi { base, grouping })
}

/// `successful-delivery-rate` → `SuccessfulDeliveryRate`.
fn value_key(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// A double as Pinpoint writes it (`1368.0`, `0.25`).
fn double(v: f64) -> String {
    format!("{v:?}")
}

fn cell(key: &str, kind: &str, value: String) -> ResultRowValue {
    ResultRowValue { key: key.to_string(), r#type: kind.to_string(), value }
}

/// The row key a counter's scope falls under for this query, or `None` when it is outside it.
fn row_of(level: &Level, cover: Cover, grouping: Grouping, day: &str, scope: &str) -> Option<String> {
    let inside = match (cover, level) {
        (Cover::Transactional, _) => scope == "t",
        (Cover::Campaigns, Level::App) => scope.starts_with("c:"),
        (Cover::Campaigns, Level::Campaign(c)) => {
            scope.strip_prefix("c:") == Some(c.as_str())
                || (grouping == Grouping::CampaignActivity
                    && scope.strip_prefix("a:").and_then(|r| r.strip_prefix(c.as_str())).is_some_and(|r| r.starts_with(':')))
        }
        (Cover::Campaigns, Level::Journey(j)) => {
            scope.strip_prefix("j:") == Some(j.as_str())
                || (grouping == Grouping::JourneyActivity
                    && scope.strip_prefix("ja:").and_then(|r| r.strip_prefix(j.as_str())).is_some_and(|r| r.starts_with(':')))
        }
    };
    if !inside {
        return None;
    }
    let per_activity = scope.starts_with("a:") || scope.starts_with("ja:");
    match grouping {
        Grouping::None => (!per_activity).then(String::new),
        Grouping::Date => (!per_activity).then(|| day.to_string()),
        Grouping::Campaign => scope.strip_prefix("c:").map(str::to_string),
        Grouping::CampaignActivity => scope.strip_prefix("a:").and_then(|r| r.split_once(':')).map(|(_, run)| run.to_string()),
        Grouping::JourneyActivity => scope.strip_prefix("ja:").and_then(|r| r.split_once(':')).map(|(_, a)| a.to_string()),
    }
}

/// The rows of `kpi` over `days` (UTC `YYYY-MM-DD`), from the store's counters.
pub async fn rows(store: &dyn Store, app: &str, level: &Level, kpi: &Kpi, days: &[String]) -> Result<Vec<ResultRow>, StoreError> {
    let counters = store.kpi_counters(app, days).await?;
    let mut groups: BTreeMap<String, Sums> = BTreeMap::new();
    for (day, fields) in days.iter().zip(&counters) {
        for (field, n) in fields {
            let Some((counter, scope)) = field.split_once('|') else { continue };
            if let Some(row) = row_of(level, kpi.base.cover, kpi.grouping, day, scope) {
                groups.entry(row).or_default().add(counter, *n);
            }
        }
    }
    let group_key = match kpi.grouping {
        Grouping::None => None,
        Grouping::Date => Some("Date"),
        Grouping::Campaign => Some("CampaignId"),
        Grouping::CampaignActivity => Some("CampaignActivityId"),
        Grouping::JourneyActivity => Some("JourneyActivityId"),
    };
    let key = value_key(kpi.base.name);
    let row = |group: &str, value: f64| ResultRow {
        grouped_bys: group_key.map(|k| vec![cell(k, "String", group.to_string())]).unwrap_or_default(),
        values: vec![cell(&key, "Double", double(value))],
    };
    match kpi.base.calc {
        Calc::Value(f) => Ok(groups.iter().filter_map(|(g, s)| f(s).map(|v| row(g, v))).collect()),
        Calc::SmsErrors => {
            let s = groups.remove("").unwrap_or_default();
            let mut codes: Vec<(&String, &i64)> = s.0.iter().filter(|(k, _)| k.starts_with("smserr.")).collect();
            codes.sort();
            Ok(codes
                .into_iter()
                .map(|(k, n)| ResultRow {
                    grouped_bys: vec![cell("ErrorCode", "String", k.trim_start_matches("smserr.").to_string())],
                    values: vec![cell(&key, "Double", double(*n as f64))],
                })
                .collect())
        }
        Calc::UniqueDeliveries => {
            // One union per row: the row's scope on each of its days.
            let mut wanted: Vec<(String, Vec<(String, String)>)> = Vec::new();
            let scope_of = |g: &str| match (level, kpi.grouping) {
                (Level::App, Grouping::Campaign) => format!("c:{g}"),
                (Level::App, _) => "C".to_string(),
                (Level::Campaign(c), Grouping::CampaignActivity) => format!("a:{c}:{g}"),
                (Level::Campaign(c), _) => format!("c:{c}"),
                (Level::Journey(j), Grouping::JourneyActivity) => format!("ja:{j}:{g}"),
                (Level::Journey(j), _) => format!("j:{j}"),
            };
            for g in groups.keys() {
                let on: Vec<(String, String)> = match kpi.grouping {
                    Grouping::Date => vec![(g.clone(), scope_of(""))],
                    _ => days.iter().map(|d| (d.clone(), scope_of(g))).collect(),
                };
                wanted.push((g.clone(), on));
            }
            let sets: Vec<Vec<(String, String)>> = wanted.iter().map(|(_, w)| w.clone()).collect();
            let counts = store.kpi_uniques(app, &sets).await?;
            Ok(wanted.iter().zip(counts).filter(|(_, n)| *n > 0).map(|((g, _), n)| row(g, n as f64)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_their_groupings() {
        let app = Level::App;
        let campaign = Level::Campaign("c1".into());
        assert_eq!(parse(&app, "email-open-rate").unwrap().grouping, Grouping::None);
        assert_eq!(parse(&app, "unique-deliveries-grouped-by-campaign").unwrap().grouping, Grouping::Campaign);
        assert_eq!(parse(&campaign, "successful-delivery-rate-grouped-by-campaign-activity").unwrap().grouping, Grouping::CampaignActivity);
        assert!(parse(&campaign, "txn-emails-sent").is_err());
        assert!(parse(&app, "txn-emails-sent-grouped-by-campaign").is_err());
        assert!(parse(&app, "txn-sms-sent-grouped-by-country").unwrap_err().contains("country"));
        assert!(parse(&app, "nonsense").unwrap_err().contains("email-open-rate"));
        let journey = Level::Journey("j1".into());
        assert_eq!(parse(&journey, "email-open-rate-grouped-by-journey-activity").unwrap().grouping, Grouping::JourneyActivity);
        assert!(parse(&journey, "email-open-rate-grouped-by-campaign-activity").is_err());
        assert!(parse(&campaign, "email-open-rate-grouped-by-journey-activity").is_err());
        assert_eq!(row_of(&journey, Cover::Campaigns, Grouping::JourneyActivity, "d", "ja:j1:welcome"), Some("welcome".into()));
        assert_eq!(row_of(&journey, Cover::Campaigns, Grouping::None, "d", "ja:j1:welcome"), None);
        assert_eq!(row_of(&journey, Cover::Campaigns, Grouping::None, "d", "j:j1"), Some(String::new()));
        assert_eq!(row_of(&journey, Cover::Campaigns, Grouping::None, "d", "j:j2"), None);
        assert_eq!(value_key("unique-deliveries"), "UniqueDeliveries");
        assert_eq!(double(1368.0), "1368.0");
        assert_eq!(double(0.25), "0.25");
    }
}
