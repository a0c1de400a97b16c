//! Any RPC by its path, with the request as raw protobuf bytes (as a reflection-driven client
//! calls what it found in the descriptors).

use std::time::Duration;

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Messages as raw protobuf bytes.
#[derive(Clone, Copy, Default)]
pub struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

/// Reads a response stream to its end (at most 3 s: a stream that stays open, following events,
/// is fine; only what it says counts).
async fn drain(mut s: tonic::Streaming<Vec<u8>>) -> Result<(), Status> {
    let read = async move {
        while s.message().await?.is_some() {}
        Ok::<_, Status>(())
    };
    tokio::time::timeout(Duration::from_secs(3), read).await.unwrap_or(Ok(()))
}

/// Calls `path` with `body` (one message, for streaming requests too), carrying `meta`'s
/// metadata (its API key), and reads the whole answer.
pub async fn call(
    channel: Channel,
    meta: Request<()>,
    path: &str,
    client_streaming: bool,
    server_streaming: bool,
    body: Vec<u8>,
) -> Result<(), Status> {
    let mut g = tonic::client::Grpc::new(channel);
    g.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path).unwrap();
    let metadata = meta.metadata().clone();
    let req = |m| {
        let mut r = Request::new(m);
        *r.metadata_mut() = metadata.clone();
        r
    };
    match (client_streaming, server_streaming) {
        (false, false) => g.unary(req(body), path, Raw).await.map(|_| ()),
        (false, true) => {
            let s = g.server_streaming(req(body), path, Raw).await?.into_inner();
            drain(s).await
        }
        (true, false) => {
            let mut r = Request::new(futures::stream::iter(vec![body]));
            *r.metadata_mut() = metadata.clone();
            g.client_streaming(r, path, Raw).await.map(|_| ())
        }
        (true, true) => {
            let mut r = Request::new(futures::stream::iter(vec![body]));
            *r.metadata_mut() = metadata.clone();
            let s = g.streaming(r, path, Raw).await?.into_inner();
            drain(s).await
        }
    }
}
