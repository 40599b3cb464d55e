//! The one query-string module: pagination (`limit`, `offset`) and typed parameters, read as
//! upstream's FastAPI reads them, with pydantic's 422 error shape (`detail[]` of `type`, `loc`,
//! `msg`, `input`, and `ctx` for bounds). The node filter language (`field__op=value`) is
//! `kernelci::query`'s; the routes that take it get their pagination from there.

use serde_json::json;

use crate::http::{ApiError, Request, parse_bool};

/// A page asked for: `limit` (`None`: not given) and `offset` (default 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Page size.
    pub limit: Option<u64>,
    /// Items to skip.
    pub offset: u64,
}

impl Page {
    /// Reads `limit` (at least `min_limit`, at most `max_limit` when given: 422
    /// `greater_than_equal`, or the above-maximum error) and `offset` (at least 0).
    pub fn from_request(
        req: &Request,
        min_limit: i64,
        max_limit: Option<u64>,
    ) -> Result<Page, ApiError> {
        let limit = req.query_int("limit", min_limit)?.map(|n| n as u64);
        if let (Some(l), Some(max)) = (limit, max_limit)
            && l > max
        {
            return Err(ApiError::above_maximum("limit", l, max));
        }
        let offset = req.query_int("offset", 0)?.map_or(0, |n| n as u64);
        Ok(Page { limit, offset })
    }
}

/// A bounded integer query parameter of the viewer (our extension): `default` when absent
/// or empty, else a 400 naming the range (the viewer's pages show it).
pub fn int_param(
    req: &Request,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ApiError> {
    match req.query_param(name) {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Invalid value for '{name}': '{v}' (an integer from {min} to {max})"
                ))
            }),
    }
}

impl Request {
    /// An integer query parameter read as FastAPI reads `int = Query(ge=min)`: 422
    /// `int_parsing` when it is no integer, `greater_than_equal` below `min`.
    pub fn query_int(&self, name: &str, min: i64) -> Result<Option<i64>, ApiError> {
        let Some(raw) = self.query_param(name) else {
            return Ok(None);
        };
        let t = raw.trim();
        let n = t.parse::<i64>().ok().or_else(|| {
            t.parse::<f64>()
                .ok()
                .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e18)
                .map(|x| x as i64)
        });
        let Some(n) = n else {
            return Err(ApiError::validation(
                "query",
                name,
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
                raw,
            ));
        };
        if n < min {
            return Err(ApiError::bound("query", name, raw, "ge", json!(min)));
        }
        Ok(Some(n))
    }

    /// A number query parameter read as FastAPI reads `float = Query(ge=min, le=max)`: 422
    /// `float_parsing`, `greater_than_equal` or `less_than_equal`.
    pub fn query_float(&self, name: &str, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
        let Some(raw) = self.query_param(name) else {
            return Ok(None);
        };
        let Ok(x) = raw.trim().parse::<f64>() else {
            return Err(ApiError::validation(
                "query",
                name,
                "float_parsing",
                "Input should be a valid number, unable to parse string as a number",
                raw,
            ));
        };
        if x < min {
            return Err(ApiError::bound("query", name, raw, "ge", json!(min)));
        }
        // NaN compares false everywhere: pydantic reports it against the upper bound.
        if x > max || x.is_nan() {
            return Err(ApiError::bound("query", name, raw, "le", json!(max)));
        }
        Ok(Some(x))
    }

    /// A boolean query flag, read as upstream's FastAPI reads `bool` (true/1/yes/on).
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.query_param(name) {
            None => Ok(false),
            Some(v) => parse_bool(v).ok_or_else(|| {
                ApiError::validation(
                    "query",
                    name,
                    "bool_parsing",
                    "Input should be a valid boolean, unable to interpret input",
                    v,
                )
            }),
        }
    }
}
