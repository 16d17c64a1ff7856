//! The request-size limit, answered `RESOURCE_EXHAUSTED` as gRPC specifies.
//!
//! tonic refuses a message over `max_decoding_message_size` with `OUT_OF_RANGE`, while the gRPC
//! specification (and every other gRPC server) answers `RESOURCE_EXHAUSTED`, which is what the
//! `.proto` files promise. This layer reads the 5-byte gRPC frame headers as the request body
//! streams in and fails the body with `RESOURCE_EXHAUSTED` as soon as a header announces a
//! message over the limit, before its bytes are buffered; tonic hands that status to the caller
//! unchanged. tonic's own limit stays configured behind it, at the same size.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tonic::codegen::http::Request;
use tonic::codegen::Service;
use tonic::Status;

/// A tower layer that limits every gRPC message of a request to `max` bytes.
#[derive(Debug, Clone, Copy)]
pub struct SizeLimitLayer {
    max: usize,
}

impl SizeLimitLayer {
    pub fn new(max: usize) -> SizeLimitLayer {
        SizeLimitLayer { max }
    }
}

impl<S> tower_layer::Layer<S> for SizeLimitLayer {
    type Service = SizeLimit<S>;

    fn layer(&self, inner: S) -> SizeLimit<S> {
        SizeLimit {
            inner,
            max: self.max,
        }
    }
}

/// See [`SizeLimitLayer`].
#[derive(Debug, Clone)]
pub struct SizeLimit<S> {
    inner: S,
    max: usize,
}

impl<S, B> Service<Request<B>> for SizeLimit<S>
where
    S: Service<Request<LimitedBody<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let max = self.max;
        self.inner.call(request.map(|inner| LimitedBody {
            inner,
            max,
            header: [0; 5],
            have: 0,
            skip: 0,
        }))
    }
}

/// A request body whose gRPC frames are checked against the limit as they arrive.
#[derive(Debug)]
pub struct LimitedBody<B> {
    inner: B,
    max: usize,
    /// The header being read, and how many of its bytes have arrived.
    header: [u8; 5],
    have: usize,
    /// Message bytes still to pass before the next header.
    skip: usize,
}

impl<B> LimitedBody<B> {
    /// Follows the frame headers through `data`; an error once one announces too much.
    fn inspect(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.have = 0;
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                if len > self.max {
                    return Err(Status::resource_exhausted(format!(
                        "the request message is {len} bytes, more than the server's limit of {} bytes; split the batch",
                        self.max
                    )));
                }
                self.skip = len;
            }
        }
        Ok(())
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(status) = this.inspect(data) {
                        return Poll::Ready(Some(Err(Box::new(status))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(max: usize) -> LimitedBody<()> {
        LimitedBody {
            inner: (),
            max,
            header: [0; 5],
            have: 0,
            skip: 0,
        }
    }

    fn frame(len: u32) -> Vec<u8> {
        let mut f = vec![0];
        f.extend_from_slice(&len.to_be_bytes());
        f.extend(std::iter::repeat_n(7u8, len as usize));
        f
    }

    #[test]
    fn headers_split_across_chunks_are_read_and_only_an_oversize_message_fails() {
        let mut b = body(10);
        let mut stream = frame(10);
        stream.extend(frame(3));
        // Byte by byte: every header straddles chunk boundaries.
        for byte in &stream {
            b.inspect(std::slice::from_ref(byte)).unwrap();
        }
        let mut b = body(10);
        let big = frame(11);
        b.inspect(&big[..2]).unwrap();
        let e = b.inspect(&big[2..]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.message().contains("11 bytes"), "{e:?}");
    }
}
