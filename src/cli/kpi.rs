//! `herald kpi`: one of Pinpoint's KPIs for an app or a campaign, as a table or CSV, every page.

use clap::Args;

use super::client::ConnArgs;
use crate::proto::v1::{kpis_client::KpisClient, GetApplicationDateRangeKpiRequest, GetCampaignDateRangeKpiRequest, ResultRow};

#[derive(Debug, Args)]
pub struct KpiArgs {
    #[arg(long)]
    pub app: String,
    /// A campaign's metric instead of the app's.
    #[arg(long)]
    pub campaign: Option<String>,
    /// e.g. email-open-rate, successful-delivery-rate-grouped-by-date, txn-emails-sent.
    pub kpi_name: String,
    /// ISO-8601; default: 31 days before --end.
    #[arg(long)]
    pub start: Option<String>,
    /// ISO-8601; default: now.
    #[arg(long)]
    pub end: Option<String>,
    /// Comma-separated values with a header line instead of a table.
    #[arg(long)]
    pub csv: bool,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub async fn run(conn: ConnArgs, a: KpiArgs) -> anyhow::Result<()> {
    let mut client = KpisClient::new(conn.channel().await?);
    let (start, end) = (a.start.clone().unwrap_or_default(), a.end.clone().unwrap_or_default());
    let mut rows: Vec<ResultRow> = Vec::new();
    let mut token = String::new();
    let (mut from, mut until);
    loop {
        let page = match &a.campaign {
            Some(c) => client
                .get_campaign_date_range_kpi(conn.request(GetCampaignDateRangeKpiRequest {
                    app_id: a.app.clone(),
                    campaign_id: c.clone(),
                    kpi_name: a.kpi_name.clone(),
                    start_time: start.clone(),
                    end_time: end.clone(),
                    page_size: 100,
                    next_token: token.clone(),
                }))
                .await?
                .into_inner(),
            None => client
                .get_application_date_range_kpi(conn.request(GetApplicationDateRangeKpiRequest {
                    app_id: a.app.clone(),
                    kpi_name: a.kpi_name.clone(),
                    start_time: start.clone(),
                    end_time: end.clone(),
                    page_size: 100,
                    next_token: token.clone(),
                }))
                .await?
                .into_inner(),
        };
        (from, until) = (page.start_time.clone(), page.end_time.clone());
        rows.extend(page.kpi_result.unwrap_or_default().rows);
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    let header: Vec<String> =
        rows.first().map(|r| r.grouped_bys.iter().chain(&r.values).map(|c| c.key.clone()).collect()).unwrap_or_default();
    let lines: Vec<Vec<String>> = rows.iter().map(|r| r.grouped_bys.iter().chain(&r.values).map(|c| c.value.clone()).collect()).collect();
    if a.csv {
        if !header.is_empty() {
            println!("{}", header.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(","));
        }
        for l in &lines {
            println!("{}", l.iter().map(|v| csv_field(v)).collect::<Vec<_>>().join(","));
        }
        return Ok(());
    }
    println!("{} from {from} to {until}", a.kpi_name);
    if lines.is_empty() {
        println!("(no data)");
        return Ok(());
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| lines.iter().map(|l| l.get(i).map_or(0, String::len)).chain([header[i].len()]).max().unwrap_or(0))
        .collect();
    let print = |cells: &[String]| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", text.join("  ").trim_end());
    };
    print(&header);
    for l in &lines {
        print(l);
    }
    Ok(())
}
