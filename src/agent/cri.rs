//! The CRI v1 client: the runtime's `ImageService` over its unix socket, limited
//! to the two read-only calls the agent makes, `ListImages` and `ImageFsInfo`.
//!
//! The client code is generated at build time from `proto/api.proto` (see
//! `build.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The generated `runtime.v1` messages and client.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

use v1::image_service_client::ImageServiceClient;

/// Largest CRI response decoded. tonic's default is 4 MiB; `ListImages` on a node
/// holding thousands of images, each with several tags and digests, can exceed
/// that (the kubelet itself accepts 16 MiB from the runtime). 64 MiB leaves room
/// for the biggest nodes while still bounding what a misbehaving runtime can make
/// the agent allocate.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 64 << 20;

/// The socket path of a CRI endpoint: `unix:///PATH` (what the kubelet's
/// `--container-runtime-endpoint` and crictl take) or a bare path. Other schemes
/// (`tcp://`, `npipe://`) are refused: the runtimes serve CRI on a unix socket.
pub fn parse_endpoint(s: &str) -> Result<PathBuf, String> {
    let s = s.trim();
    let path = match s.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("unix") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{s:?}: unsupported scheme {scheme:?}; the CRI endpoint must be a unix socket (unix:///PATH or /PATH)"
            ));
        }
        None if s.starts_with("unix:") => &s["unix:".len()..],
        None => s,
    };
    if path.is_empty() {
        return Err(format!("{s:?}: no socket path"));
    }
    if path.contains('\0') {
        return Err(format!("{s:?}: the path holds a NUL byte"));
    }
    Ok(PathBuf::from(path))
}

/// A CRI error: which call, and why.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{}", describe(.0))]
    Status(#[from] tonic::Status),
}

/// A status in a line: the code and message, and the transport's cause (such as
/// "No such file or directory" when the socket is gone).
fn describe(status: &tonic::Status) -> String {
    use std::error::Error;
    let text = format!("{:?}: {}", status.code(), status.message());
    crate::text::with_causes(text, status.source())
}

/// The runtime's image service on one socket. The channel connects lazily and
/// reconnects on the next call after the runtime went away, so a runtime restart
/// needs nothing from the caller.
#[derive(Clone)]
pub struct Client {
    inner: ImageServiceClient<Channel>,
    timeout: Duration,
    path: PathBuf,
}

impl Client {
    /// A client for the socket at `path`; nothing is dialled until the first call.
    /// Each call, connecting included, is bounded by `timeout`.
    pub fn new(socket: &Path, timeout: Duration) -> Client {
        let path = socket.to_path_buf();
        // The URI is required by the API but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://cri.invalid")
            .connect_timeout(timeout)
            .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }));
        Client {
            inner: ImageServiceClient::new(channel)
                .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
            timeout,
            path: socket.to_path_buf(),
        }
    }

    /// The socket this client dials.
    pub fn socket(&self) -> &Path {
        &self.path
    }

    /// `runtime.v1.ImageService/ListImages`, every image (no filter).
    pub async fn list_images(&self) -> Result<v1::ListImagesResponse, CallError> {
        let mut client = self.inner.clone();
        let call = client.list_images(self.request(v1::ListImagesRequest {}));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => Ok(r?.into_inner()),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    /// `runtime.v1.ImageService/ImageFsInfo`.
    pub async fn image_fs_info(&self) -> Result<v1::ImageFsInfoResponse, CallError> {
        let mut client = self.inner.clone();
        let call = client.image_fs_info(self.request(v1::ImageFsInfoRequest {}));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => Ok(r?.into_inner()),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    /// A request carrying the deadline, so the runtime can give up too.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn endpoints() {
        let ok = |s: &str| parse_endpoint(s).map(|p| p.display().to_string());
        assert_eq!(
            ok("unix:///run/containerd/containerd.sock").as_deref(),
            Ok("/run/containerd/containerd.sock")
        );
        assert_eq!(
            ok("unix:///var/run/crio/crio.sock").as_deref(),
            Ok("/var/run/crio/crio.sock")
        );
        assert_eq!(ok("/tmp/x/cri.sock").as_deref(), Ok("/tmp/x/cri.sock"));
        assert_eq!(ok("UNIX:///a.sock").as_deref(), Ok("/a.sock"));
        assert_eq!(ok("unix:/a.sock").as_deref(), Ok("/a.sock"));
        assert_eq!(ok("  run/c.sock ").as_deref(), Ok("run/c.sock"));
        for bad in [
            "",
            "unix://",
            "unix:",
            "tcp://127.0.0.1:1234",
            "npipe:////./pipe/containerd",
            "http://localhost/x",
            "/a\0b",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
        let err = parse_endpoint("tcp://127.0.0.1:1").unwrap_err();
        assert!(err.contains("unix socket"), "{err}");
    }

    /// A `ListImagesResponse` as a runtime implementing the full API sends it:
    /// the fields this subset leaves out (uid, username, spec) are skipped.
    #[test]
    fn the_subset_reads_the_full_api_and_refuses_garbage() {
        use prost::Message;
        let image: Vec<u8> = [
            &[0x0a, 0x03][..],
            b"sha",
            &[0x12, 0x03],
            b"a:1",
            &[0x1a, 0x03],
            b"a@x",
            &[0x20, 0xac, 0x02],       // size 300
            &[0x2a, 0x02, 0x08, 0x07], // uid: Int64Value { value: 7 }
            &[0x32, 0x04],
            b"root",                         // username
            &[0x3a, 0x03, 0x0a, 0x01, b'i'], // spec: ImageSpec { image: "i" }
            &[0x40, 0x01],                   // pinned
            &[0xa0, 0x06, 0x01],             // a field number no version has yet (100)
        ]
        .concat();
        let mut response = vec![0x0a, image.len() as u8];
        response.extend_from_slice(&image);
        let decoded = v1::ListImagesResponse::decode(response.as_slice()).unwrap();
        assert_eq!(
            decoded.images,
            [v1::Image {
                id: "sha".into(),
                repo_tags: vec!["a:1".into()],
                repo_digests: vec!["a@x".into()],
                size: 300,
                pinned: true,
            }]
        );
        // Truncated, or a string that is not UTF-8: an error, not a panic.
        assert!(v1::ListImagesResponse::decode(&response[..response.len() - 4]).is_err());
        assert!(v1::Image::decode(&[0x0a, 0x02, 0xff, 0xfe][..]).is_err());
    }

    proptest! {
        #[test]
        fn decoding_anything_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            use prost::Message;
            let _ = v1::ListImagesResponse::decode(bytes.as_slice());
            let _ = v1::ImageFsInfoResponse::decode(bytes.as_slice());
        }

        #[test]
        fn a_path_and_its_unix_url_are_the_same_socket(path in "/[a-zA-Z0-9_./-]{0,40}") {
            prop_assert_eq!(
                parse_endpoint(&format!("unix://{path}")),
                parse_endpoint(&path)
            );
            prop_assert_eq!(parse_endpoint(&path), Ok(PathBuf::from(&path)));
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse_endpoint(&s);
        }
    }
}
