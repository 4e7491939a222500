//! HTTP/1.1 to TLS upstreams, with hyper's client. (Membrane's own HTTP/1.1 client reads and
//! writes one TCP socket through shared references, full duplex; a TLS session cannot be
//! shared that way, and upstream TLS is not on the path the speed targets measure.)
//! The connection goes back to this worker's pool when the response body has been read to
//! its end; a body dropped early takes its connection with it.

use super::pool::{self, PoolKey, Sender};
use super::{Cluster, UpstreamBody, UpstreamError, connection};
use crate::body::RequestBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::{Request, Response};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

pub struct PooledBody {
    body: Incoming,
    back: Option<(PoolKey, http1::SendRequest<RequestBody>)>,
}

impl PooledBody {
    fn finish(&mut self) {
        if let Some((key, sender)) = self.back.take() {
            pool::checkin(key, Sender::Tls1(sender));
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => self.finish(),
            Some(Err(_)) => self.back = None,
            Some(Ok(_)) if self.body.is_end_stream() => self.finish(),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pub(super) async fn exchange(
    cluster: &Cluster,
    key: PoolKey,
    mut req: Request<RequestBody>,
) -> Result<Response<UpstreamBody>, UpstreamError> {
    let addr = key.addr;
    // As for the other clients: a request not sent on a pooled connection is retried once.
    for attempt in 0..2 {
        let (sender, reused) = connection(cluster, key, attempt).await?;
        let Sender::Tls1(mut sender) = sender else {
            break;
        };
        if sender.ready().await.is_err() && reused {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                let mut body = PooledBody {
                    body,
                    back: Some((key, sender)),
                };
                if body.body.is_end_stream() {
                    body.finish();
                }
                return Ok(Response::from_parts(parts, UpstreamBody::Tls1(body)));
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => req = unsent,
                _ => {
                    return Err(UpstreamError::Exchange {
                        addr,
                        source: e.into_error(),
                    });
                }
            },
        }
    }
    Err(UpstreamError::Reset {
        addr,
        reason: "no usable connection".into(),
    })
}
