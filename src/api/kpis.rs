//! The `Kpis` service: Pinpoint's GetApplicationDateRangeKpi and GetCampaignDateRangeKpi over
//! the day counters the store keeps ([`crate::kpi`]).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tonic::{Request, Response, Status};

use super::{check_app_id, invalid, observe, store_status};
use crate::domain::{self, FieldViolation};
use crate::kpi::query::{self, Level};
use crate::proto::v1::{
    kpis_server, DateRangeKpiResponse, GetApplicationDateRangeKpiRequest, GetCampaignDateRangeKpiRequest, GetJourneyDateRangeKpiRequest,
    KpiResult,
};
use crate::store::Store;

/// Days a range covers at most, and how far back it may start (Pinpoint's limits).
pub const MAX_DAYS: i64 = 31;
pub const MAX_AGE_DAYS: i64 = 90;
const MAX_PAGE: usize = 100;

pub struct KpisService {
    store: Arc<dyn Store>,
}

impl KpisService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

/// What a request asks, checked: the range and its UTC days, the page.
#[derive(Debug)]
struct Range {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    days: Vec<String>,
    offset: usize,
    page_size: usize,
}

fn range(start: &str, end: &str, page_size: i32, next_token: &str, now: DateTime<Utc>) -> Result<Range, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let parse = |s: &str, f: &str, v: &mut Vec<FieldViolation>| {
        if s.is_empty() {
            return None;
        }
        let t = crate::segments::rule::parse_instant(s);
        if t.is_none() {
            v.push(FieldViolation::new(f, format!("'{s}' is not an ISO-8601 date and time")));
        }
        t
    };
    let given_end = parse(end, "end_time", &mut v);
    let given_start = parse(start, "start_time", &mut v);
    let end = given_end.unwrap_or(now);
    let start = given_start.unwrap_or(end - Duration::days(MAX_DAYS - 1));
    if start > end {
        v.push(FieldViolation::new("start_time", "must not be after end_time"));
    }
    let (first, last) = (start.date_naive(), end.date_naive());
    if (last - first).num_days() + 1 > MAX_DAYS {
        v.push(FieldViolation::new("end_time", format!("a range covers at most {MAX_DAYS} calendar days")));
    }
    if start < now - Duration::days(MAX_AGE_DAYS) {
        v.push(FieldViolation::new("start_time", format!("must be less than {MAX_AGE_DAYS} days ago")));
    }
    if !(0..=MAX_PAGE as i32).contains(&page_size) {
        v.push(FieldViolation::new("page_size", format!("must be 1 to {MAX_PAGE}")));
    }
    let offset = match next_token {
        "" => 0,
        t => t.parse().unwrap_or_else(|_| {
            v.push(FieldViolation::new("next_token", "is not a token this service gave"));
            0
        }),
    };
    if !v.is_empty() {
        return Err(v);
    }
    let days = first.iter_days().take_while(|d| *d <= last).map(|d| d.format("%Y-%m-%d").to_string()).collect();
    Ok(Range { start, end, days, offset, page_size: if page_size == 0 { MAX_PAGE } else { page_size as usize } })
}

impl KpisService {
    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &self,
        app: &str,
        level: Level,
        kpi_name: &str,
        start: &str,
        end: &str,
        page_size: i32,
        next_token: &str,
    ) -> Result<DateRangeKpiResponse, Status> {
        check_app_id(app)?;
        let mut violations = Vec::new();
        let kpi = match query::parse(&level, kpi_name) {
            Ok(k) => Some(k),
            Err(why) => {
                violations.push(FieldViolation::new("kpi_name", why.to_string()));
                None
            }
        };
        let r = range(start, end, page_size, next_token, Utc::now());
        let r = match (r, kpi) {
            (Ok(r), Some(kpi)) => (r, kpi),
            (r, _) => {
                violations.extend(r.err().unwrap_or_default());
                return Err(invalid(violations));
            }
        };
        let (r, kpi) = r;
        if self.store.get_app(app).await.map_err(store_status)?.is_none() {
            return Err(Status::not_found(format!("app {app} not found")));
        }
        if let Level::Campaign(c) = &level {
            if self.store.get_record(app, crate::campaigns::KIND, c, None).await.map_err(store_status)?.is_none() {
                return Err(Status::not_found(format!("campaign {c} not found")));
            }
        }
        if let Level::Journey(j) = &level {
            if self.store.get_record(app, crate::journeys::KIND, j, None).await.map_err(store_status)?.is_none() {
                return Err(Status::not_found(format!("journey {j} not found")));
            }
        }
        let rows = query::rows(self.store.as_ref(), app, &level, &kpi, &r.days).await.map_err(store_status)?;
        let total = rows.len();
        let page: Vec<_> = rows.into_iter().skip(r.offset).take(r.page_size).collect();
        let next = r.offset + page.len();
        Ok(DateRangeKpiResponse {
            app_id: app.to_string(),
            campaign_id: match &level {
                Level::Campaign(c) => c.clone(),
                _ => String::new(),
            },
            journey_id: match level {
                Level::Journey(j) => j,
                _ => String::new(),
            },
            kpi_name: kpi_name.to_string(),
            start_time: domain::timestamp(r.start),
            end_time: domain::timestamp(r.end),
            kpi_result: Some(KpiResult { rows: page }),
            next_token: if next < total { next.to_string() } else { String::new() },
        })
    }
}

#[tonic::async_trait]
impl kpis_server::Kpis for KpisService {
    async fn get_application_date_range_kpi(
        &self,
        request: Request<GetApplicationDateRangeKpiRequest>,
    ) -> Result<Response<DateRangeKpiResponse>, Status> {
        observe("GetApplicationDateRangeKpi", async {
            let r = request.into_inner();
            self.answer(&r.app_id, Level::App, &r.kpi_name, &r.start_time, &r.end_time, r.page_size, &r.next_token).await.map(Response::new)
        })
        .await
    }

    async fn get_campaign_date_range_kpi(
        &self,
        request: Request<GetCampaignDateRangeKpiRequest>,
    ) -> Result<Response<DateRangeKpiResponse>, Status> {
        observe("GetCampaignDateRangeKpi", async {
            let r = request.into_inner();
            if r.campaign_id.is_empty() {
                return Err(invalid(vec![FieldViolation::new("campaign_id", "is required")]));
            }
            let level = Level::Campaign(r.campaign_id.clone());
            self.answer(&r.app_id, level, &r.kpi_name, &r.start_time, &r.end_time, r.page_size, &r.next_token).await.map(Response::new)
        })
        .await
    }

    async fn get_journey_date_range_kpi(
        &self,
        request: Request<GetJourneyDateRangeKpiRequest>,
    ) -> Result<Response<DateRangeKpiResponse>, Status> {
        observe("GetJourneyDateRangeKpi", async {
            let r = request.into_inner();
            if r.journey_id.is_empty() {
                return Err(invalid(vec![FieldViolation::new("journey_id", "is required")]));
            }
            let level = Level::Journey(r.journey_id.clone());
            self.answer(&r.app_id, level, &r.kpi_name, &r.start_time, &r.end_time, r.page_size, &r.next_token).await.map(Response::new)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_pinpoints_limits() {
        let now = crate::segments::rule::parse_instant("2026-11-30T12:00:00Z").unwrap();
        let r = range("", "", 0, "", now).unwrap();
        assert_eq!((r.days.len(), r.days[0].as_str(), r.days[30].as_str()), (31, "2026-10-31", "2026-11-30"));
        let r = range("2026-11-01T00:00:00Z", "2026-11-01T23:59:59Z", 10, "20", now).unwrap();
        assert_eq!((r.days, r.page_size, r.offset), (vec!["2026-11-01".to_string()], 10, 20));
        let fields = |e: Vec<FieldViolation>| e.into_iter().map(|v| v.field).collect::<Vec<_>>();
        assert_eq!(fields(range("2026-10-01T00:00:00Z", "2026-11-30T00:00:00Z", 0, "", now).unwrap_err()), ["end_time"]);
        assert_eq!(fields(range("2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z", 0, "", now).unwrap_err()), ["start_time"]);
        assert_eq!(fields(range("yesterday", "", 101, "x", now).unwrap_err()), ["start_time", "page_size", "next_token"]);
    }
}
