//! The `Date` header value, formatted once per second per worker.

use http::HeaderValue;
use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHE: RefCell<(u64, HeaderValue)> =
        const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

/// Now, as an HTTP-date (RFC 9110 §5.6.7).
pub fn now() -> HeaderValue {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    CACHE
        .try_with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs {
                let text = httpdate::fmt_http_date(now);
                c.1 = HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""));
                c.0 = secs;
            }
            c.1.clone()
        })
        .unwrap_or_else(|_| {
            HeaderValue::from_str(&httpdate::fmt_http_date(now))
                .unwrap_or(HeaderValue::from_static(""))
        })
}
