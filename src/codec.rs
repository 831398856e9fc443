//! The protobuf codec of every generated client and server here: prost's, except that a request
//! that does not decode (wrong wire types, truncated fields, invalid UTF-8 in a string) is the
//! caller's fault and answered INVALID_ARGUMENT, not the INTERNAL that gRPC libraries use by
//! default, which would page the operators of a service for a client's bug. A response that does
//! not decode stays INTERNAL. Which one a message is, the generated type name says: the contract
//! names every request `*Request` and every response `*Response` (buf lint enforces it).

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstDecoder};

/// prost's codec with request decode failures answered INVALID_ARGUMENT; see the module docs.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self { inner: ProstCodec::default() }
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder { inner: self.inner.decoder(), _message: PhantomData }
    }
}

/// The decoder of [`StrictCodec`].
#[derive(Debug)]
pub struct StrictDecoder<U> {
    inner: ProstDecoder<U>,
    _message: PhantomData<U>,
}

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|status| {
            let name = std::any::type_name::<U>().rsplit("::").next().unwrap_or_default();
            if is_request(name) {
                Status::invalid_argument(format!("the {name} message is malformed: {}", status.message()))
            } else {
                status
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

fn is_request(type_name: &str) -> bool {
    type_name.ends_with("Request")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_from_responses_by_the_generated_name() {
        let name = |full: &'static str| full.rsplit("::").next().unwrap_or_default();
        assert!(is_request(name(std::any::type_name::<crate::pb::CreateApiKeyRequest>())));
        assert!(!is_request(name(std::any::type_name::<crate::pb::CreateApiKeyResponse>())));
        assert!(!is_request(name(std::any::type_name::<crate::pb::WatchKeyChangesResponse>())));
    }
}
