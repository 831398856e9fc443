//! The API key service as the gRPC server serves it: every RPC through its generated route except
//! `Authenticate`, which answers with the cached principal's encoding as it is.
//!
//! `Authenticate` is on every request path of the platform and almost always answered from the
//! cache. Through the generated route, each call would copy the cached principal into a response
//! message, encode it and drop it (~0.4 µs, a tenth of what apikeys adds to a bare tonic call:
//! `BENCHMARKS.md`). Here the cache keeps each principal's `AuthenticateResponse` encoding next to
//! it and the route writes those bytes. The request is decoded and checked exactly as the
//! generated route would ([`StrictCodec`]'s decoder, the same message size limit), and the answer
//! is the same bytes the generated route would send.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{BufMut as _, Bytes};
use tonic::{
    Status,
    body::Body,
    codec::{Codec, EncodeBuf, Encoder},
    server::{Grpc, NamedService, UnaryService},
};

use super::ApiKeyApi;
use crate::{
    codec::{StrictCodec, StrictDecoder},
    pb::{self, api_key_service_server::ApiKeyServiceServer},
};

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send + 'static>>;

/// The path of the Authenticate RPC.
const AUTHENTICATE: &str = "/apikeys.v1.ApiKeyService/Authenticate";

/// The service's routes; see the module docs. One `Arc`: the server clones its whole stack for
/// every call, and each `Arc` in it is a shared count bumped and dropped per call.
#[derive(Debug, Clone)]
pub struct ApiKeyRoutes(Arc<Routes>);

#[derive(Debug)]
struct Routes {
    generated: ApiKeyServiceServer<ApiKeyApi>,
    api: ApiKeyApi,
    max_request_bytes: usize,
}

impl ApiKeyRoutes {
    /// The routes of `api`, refusing request messages over `max_request_bytes` (OUT_OF_RANGE).
    pub fn new(api: ApiKeyApi, max_request_bytes: usize) -> Self {
        let generated = ApiKeyServiceServer::new(api.clone()).max_decoding_message_size(max_request_bytes);
        Self(Arc::new(Routes { generated, api, max_request_bytes }))
    }

    /// The generated service alone (the console calls it in process).
    pub fn generated(&self) -> ApiKeyServiceServer<ApiKeyApi> {
        self.0.generated.clone()
    }
}

impl NamedService for ApiKeyRoutes {
    const NAME: &'static str = <ApiKeyServiceServer<ApiKeyApi> as NamedService>::NAME;
}

impl<B> tower::Service<http::Request<B>> for ApiKeyRoutes
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != AUTHENTICATE {
            // The generated service is ready whenever called (its poll_ready is always ready).
            return tower::Service::call(&mut self.0.generated.clone(), request);
        }
        let routes = self.0.clone();
        Box::pin(async move {
            let mut grpc = Grpc::new(AnswerCodec).apply_max_message_size_config(Some(routes.max_request_bytes), None);
            Ok(grpc.unary(Authenticate(&routes.api), request).await)
        })
    }
}

/// The Authenticate call, answered with the encoding of its response. It borrows the API from
/// the route's future, which holds it for the call.
struct Authenticate<'a>(&'a ApiKeyApi);

impl<'a> UnaryService<pb::AuthenticateRequest> for Authenticate<'a> {
    type Response = Bytes;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<tonic::Response<Bytes>, Status>> + Send + 'a>>;

    fn call(&mut self, request: tonic::Request<pb::AuthenticateRequest>) -> Self::Future {
        let api = self.0;
        Box::pin(async move { Ok(tonic::Response::new(api.answer(request).await?.encoded)) })
    }
}

/// Decodes `AuthenticateRequest`s as the generated route does; encodes a response that is
/// already encoded by writing its bytes.
#[derive(Debug, Clone, Copy, Default)]
struct AnswerCodec;

impl Codec for AnswerCodec {
    type Encode = Bytes;
    type Decode = pb::AuthenticateRequest;
    type Encoder = Self;
    type Decoder = StrictDecoder<pb::AuthenticateRequest>;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictCodec::<pb::AuthenticateResponse, pb::AuthenticateRequest>::default().decoder()
    }
}

impl Encoder for AnswerCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put(item);
        Ok(())
    }
}
