//! Pinpoint's endpoint import shapes: CSV with dotted column names
//! (`ChannelType,Address,Id,User.UserId,User.UserAttributes.FirstName,Attributes.Plan,...`) and
//! JSON lines of endpoint objects (`{"ChannelType":"SMS","Address":"+1...","User":{...}}`).
//! Each row becomes an endpoint write; a bad row is reported with its line and reason.

use std::collections::HashMap;
use std::io::Read;

use serde::Deserialize;

use super::endpoint::parse_channel;
use crate::proto::v1::{AttributeValues, Endpoint, EndpointDemographic, EndpointLocation, EndpointStatus, EndpointUser, OptOut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// By file name: `.csv` is CSV, `.json`/`.jsonl`/`.ndjson` are JSON lines.
    pub fn from_path(path: &str) -> Option<Self> {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(Self::Csv)
        } else if lower.ends_with(".jsonl") || lower.ends_with(".json") || lower.ends_with(".ndjson") {
            Some(Self::JsonLines)
        } else {
            None
        }
    }
}

/// Why a row (or a whole CSV file, for its header) cannot be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("unknown column '{0}'")]
    UnknownColumn(String),
    #[error("EndpointStatus '{0}' is not ACTIVE or INACTIVE")]
    Status(String),
    #[error("OptOut '{0}' is not ALL or NONE")]
    OptOut(String),
    #[error("{field} '{value}' is not a number")]
    NotANumber { field: String, value: String },
    #[error("ChannelType '{0}' is not a channel type")]
    Channel(String),
    #[error("cannot read the CSV header: {0}")]
    Header(String),
    #[error("malformed CSV: {0}")]
    Csv(String),
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("cannot read the line: {0}")]
    Read(String),
}

/// One row of an import file: its 1-based line and the endpoint write or why it is bad.
#[derive(Debug)]
pub struct Row {
    pub line: u64,
    pub endpoint: Result<Endpoint, RowError>,
}

/// A column of a CSV import file.
#[derive(Debug, Clone)]
enum Column {
    Id,
    ChannelType,
    Address,
    EndpointStatus,
    OptOut,
    EffectiveDate,
    RequestId,
    UserId,
    UserAttribute(String),
    Attribute(String),
    Metric(String),
    Location(&'static str),
    Demographic(&'static str),
}

const LOCATION: [&str; 6] = ["City", "Country", "Latitude", "Longitude", "PostalCode", "Region"];
const DEMOGRAPHIC: [&str; 8] = ["AppVersion", "Locale", "Make", "Model", "ModelVersion", "Platform", "PlatformVersion", "Timezone"];

fn column(name: &str) -> Result<Column, RowError> {
    let name = name.trim();
    let simple = match name {
        "Id" => Some(Column::Id),
        "ChannelType" => Some(Column::ChannelType),
        "Address" => Some(Column::Address),
        "EndpointStatus" => Some(Column::EndpointStatus),
        "OptOut" => Some(Column::OptOut),
        "EffectiveDate" => Some(Column::EffectiveDate),
        "RequestId" => Some(Column::RequestId),
        "User.UserId" => Some(Column::UserId),
        _ => None,
    };
    if let Some(c) = simple {
        return Ok(c);
    }
    let named = |prefix: &str| name.strip_prefix(prefix).filter(|rest| !rest.is_empty()).map(str::to_string);
    if let Some(n) = named("User.UserAttributes.") {
        return Ok(Column::UserAttribute(n));
    }
    if let Some(n) = named("Attributes.") {
        return Ok(Column::Attribute(n));
    }
    if let Some(n) = named("Metrics.") {
        return Ok(Column::Metric(n));
    }
    if let Some(f) = name.strip_prefix("Location.").and_then(|f| LOCATION.iter().find(|x| **x == f)) {
        return Ok(Column::Location(f));
    }
    if let Some(f) = name.strip_prefix("Demographic.").and_then(|f| DEMOGRAPHIC.iter().find(|x| **x == f)) {
        return Ok(Column::Demographic(f));
    }
    Err(RowError::UnknownColumn(name.to_string()))
}

fn parse_status(v: &str) -> Result<i32, RowError> {
    match v.trim().to_ascii_uppercase().as_str() {
        "ACTIVE" => Ok(EndpointStatus::Active as i32),
        "INACTIVE" => Ok(EndpointStatus::Inactive as i32),
        other => Err(RowError::Status(other.to_string())),
    }
}

fn parse_opt_out(v: &str) -> Result<i32, RowError> {
    match v.trim().to_ascii_uppercase().as_str() {
        "NONE" => Ok(OptOut::None as i32),
        "ALL" => Ok(OptOut::All as i32),
        other => Err(RowError::OptOut(other.to_string())),
    }
}

fn parse_f64(field: &str, v: &str) -> Result<f64, RowError> {
    v.trim().parse::<f64>().map_err(|_| RowError::NotANumber { field: field.to_string(), value: v.to_string() })
}

fn set_location(l: &mut EndpointLocation, field: &str, v: &str) -> Result<(), RowError> {
    match field {
        "City" => l.city = v.to_string(),
        "Country" => l.country = v.to_string(),
        "Latitude" => l.latitude = Some(parse_f64("Location.Latitude", v)?),
        "Longitude" => l.longitude = Some(parse_f64("Location.Longitude", v)?),
        "PostalCode" => l.postal_code = v.to_string(),
        _ => l.region = v.to_string(),
    }
    Ok(())
}

fn set_demographic(d: &mut EndpointDemographic, field: &str, v: &str) {
    let slot = match field {
        "AppVersion" => &mut d.app_version,
        "Locale" => &mut d.locale,
        "Make" => &mut d.make,
        "Model" => &mut d.model,
        "ModelVersion" => &mut d.model_version,
        "Platform" => &mut d.platform,
        "PlatformVersion" => &mut d.platform_version,
        _ => &mut d.timezone,
    };
    *slot = v.to_string();
}

fn one(v: &str) -> AttributeValues {
    AttributeValues { values: vec![v.to_string()] }
}

fn csv_row(columns: &[Column], record: &csv::StringRecord) -> Result<Endpoint, RowError> {
    let mut e = Endpoint::default();
    for (col, value) in columns.iter().zip(record.iter()) {
        if value.is_empty() {
            continue;
        }
        match col {
            Column::Id => e.id = value.to_string(),
            Column::ChannelType => e.channel_type = parse_channel(value).ok_or_else(|| RowError::Channel(value.to_string()))? as i32,
            Column::Address => e.address = value.to_string(),
            Column::EndpointStatus => e.endpoint_status = parse_status(value)?,
            Column::OptOut => e.opt_out = parse_opt_out(value)?,
            Column::EffectiveDate => e.effective_date = value.to_string(),
            Column::RequestId => e.request_id = value.to_string(),
            Column::UserId => e.user.get_or_insert_with(Default::default).user_id = value.to_string(),
            Column::UserAttribute(n) => {
                e.user.get_or_insert_with(Default::default).user_attributes.insert(n.clone(), one(value));
            }
            Column::Attribute(n) => {
                e.attributes.insert(n.clone(), one(value));
            }
            Column::Metric(n) => {
                e.metrics.insert(n.clone(), parse_f64(&format!("Metrics.{n}"), value)?);
            }
            Column::Location(f) => set_location(e.location.get_or_insert_with(Default::default), f, value)?,
            Column::Demographic(f) => set_demographic(e.demographic.get_or_insert_with(Default::default), f, value),
        }
    }
    Ok(e)
}

/// Rows of a CSV import file. A header naming an unknown column is an error for the whole file.
pub fn csv_rows<R: Read>(input: R) -> Result<impl Iterator<Item = Row>, RowError> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).trim(csv::Trim::Fields).from_reader(input);
    let headers = reader.headers().map_err(|e| RowError::Header(e.to_string()))?.clone();
    let columns = headers.iter().map(column).collect::<Result<Vec<_>, _>>()?;
    Ok(reader.into_records().map(move |rec| match rec {
        Ok(rec) => {
            let line = rec.position().map_or(0, |p| p.line());
            Row { line, endpoint: csv_row(&columns, &rec) }
        }
        Err(e) => {
            let line = e.position().map_or(0, |p| p.line());
            Row { line, endpoint: Err(RowError::Csv(e.to_string())) }
        }
    }))
}

/// An attribute in a JSON import: a list of strings, or one string.
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonValues {
    Many(Vec<String>),
    One(String),
}

impl From<JsonValues> for AttributeValues {
    fn from(v: JsonValues) -> Self {
        match v {
            JsonValues::Many(values) => AttributeValues { values },
            JsonValues::One(s) => AttributeValues { values: vec![s] },
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct JsonLocation {
    city: String,
    country: String,
    latitude: Option<f64>,
    longitude: Option<f64>,
    postal_code: String,
    region: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct JsonDemographic {
    app_version: String,
    locale: String,
    make: String,
    model: String,
    model_version: String,
    platform: String,
    platform_version: String,
    timezone: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct JsonUser {
    user_id: String,
    user_attributes: HashMap<String, JsonValues>,
}

/// Pinpoint's endpoint JSON; server-set fields (CohortId, CreationDate, ApplicationId) are ignored.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct JsonEndpoint {
    id: String,
    channel_type: String,
    address: String,
    endpoint_status: String,
    opt_out: String,
    effective_date: String,
    request_id: String,
    attributes: HashMap<String, JsonValues>,
    metrics: HashMap<String, f64>,
    location: Option<JsonLocation>,
    demographic: Option<JsonDemographic>,
    user: Option<JsonUser>,
}

/// One JSON line of an import file.
pub fn json_line(line: &str) -> Result<Endpoint, RowError> {
    let j: JsonEndpoint = serde_json::from_str(line).map_err(|e| RowError::Json(e.to_string()))?;
    let mut e = Endpoint { id: j.id, address: j.address, effective_date: j.effective_date, request_id: j.request_id, ..Default::default() };
    if !j.channel_type.is_empty() {
        e.channel_type = parse_channel(&j.channel_type).ok_or_else(|| RowError::Channel(j.channel_type.clone()))? as i32;
    }
    if !j.endpoint_status.is_empty() {
        e.endpoint_status = parse_status(&j.endpoint_status)?;
    }
    if !j.opt_out.is_empty() {
        e.opt_out = parse_opt_out(&j.opt_out)?;
    }
    e.attributes = j.attributes.into_iter().map(|(k, v)| (k, v.into())).collect();
    e.metrics = j.metrics.into_iter().collect();
    e.location = j.location.map(|l| EndpointLocation {
        city: l.city,
        country: l.country,
        latitude: l.latitude,
        longitude: l.longitude,
        postal_code: l.postal_code,
        region: l.region,
    });
    e.demographic = j.demographic.map(|d| EndpointDemographic {
        app_version: d.app_version,
        locale: d.locale,
        make: d.make,
        model: d.model,
        model_version: d.model_version,
        platform: d.platform,
        platform_version: d.platform_version,
        timezone: d.timezone,
    });
    e.user = j
        .user
        .map(|u| EndpointUser { user_id: u.user_id, user_attributes: u.user_attributes.into_iter().map(|(k, v)| (k, v.into())).collect() });
    Ok(e)
}

/// Rows of a JSON-lines import file; blank lines are skipped.
pub fn json_rows<R: std::io::BufRead>(input: R) -> impl Iterator<Item = Row> {
    input.lines().enumerate().filter_map(|(i, line)| {
        let line_no = i as u64 + 1;
        match line {
            Ok(l) if l.trim().is_empty() => None,
            Ok(l) => Some(Row { line: line_no, endpoint: json_line(&l) }),
            Err(e) => Some(Row { line: line_no, endpoint: Err(RowError::Read(e.to_string())) }),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::ChannelType;

    #[test]
    fn csv_with_pinpoint_columns() {
        let file = "ChannelType,Address,Id,User.UserId,User.UserAttributes.FirstName,Attributes.Plan,Location.Country,Demographic.Timezone,OptOut,Metrics.Sessions\n\
                    EMAIL,ana@example.com,e1,u1,Ana,Pro,US,America/New_York,NONE,3\n\
                    FAX,123,e2,,,,,,,\n\
                    SMS,+14155550100,e3,,,,DE,,ALL,many\n";
        let rows: Vec<_> = csv_rows(file.as_bytes()).unwrap().collect();
        assert_eq!(rows.len(), 3);
        let e = rows[0].endpoint.as_ref().unwrap();
        assert_eq!(rows[0].line, 2);
        assert_eq!(e.channel_type, ChannelType::Email as i32);
        assert_eq!(e.user.as_ref().unwrap().user_attributes["FirstName"].values, ["Ana"]);
        assert_eq!(e.attributes["Plan"].values, ["Pro"]);
        assert_eq!(e.location.as_ref().unwrap().country, "US");
        assert_eq!(e.demographic.as_ref().unwrap().timezone, "America/New_York");
        assert_eq!(e.metrics["Sessions"], 3.0);
        assert_eq!(rows[1].line, 3);
        assert!(rows[1].endpoint.as_ref().unwrap_err().to_string().contains("FAX"));
        assert!(rows[2].endpoint.as_ref().unwrap_err().to_string().contains("Metrics.Sessions"));
        assert!(csv_rows("Id,Nickname\n".as_bytes()).err().unwrap().to_string().contains("Nickname"));
    }

    #[test]
    fn json_lines_with_pinpoint_objects() {
        let file = r#"{"ChannelType":"SMS","Address":"+14155550100","Id":"e1","User":{"UserId":"u1","UserAttributes":{"FirstName":["Ana"]}},"Attributes":{"Plan":"Pro"},"Location":{"Country":"US","Latitude":47.6},"CohortId":"12"}

{"ChannelType":"SMS","Address":
{"ChannelType":"GCM","Address":"tok","Id":"e3","EndpointStatus":"DISABLED"}"#;
        let rows: Vec<_> = json_rows(file.as_bytes()).collect();
        assert_eq!(rows.len(), 3);
        let e = rows[0].endpoint.as_ref().unwrap();
        assert_eq!(e.user.as_ref().unwrap().user_id, "u1");
        assert_eq!(e.attributes["Plan"].values, ["Pro"]);
        assert_eq!(e.location.as_ref().unwrap().latitude, Some(47.6));
        assert_eq!(rows[1].line, 3);
        assert!(rows[1].endpoint.is_err());
        assert!(rows[2].endpoint.as_ref().unwrap_err().to_string().contains("DISABLED"));
    }
}
