//! The real agent binary's memory at a realistic image count: a small CRI
//! server on a unix socket (gRPC over HTTP/2 by hand: a length-prefixed protobuf
//! message and a `grpc-status` trailer) answers `ListImages` and `ImageFsInfo`
//! with a generated node's images; everything else is `UNIMPLEMENTED`.

use bytes::Bytes;
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use imagecap_exporter::agent::cri::v1;
use prost::Message;
use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A unary gRPC answer: one message (or none), then the status trailer.
struct Unary {
    message: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for Unary {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(m) = this.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(m))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

/// The gRPC answer carrying `message`, or `UNIMPLEMENTED` without one.
fn unary(message: Option<Vec<u8>>) -> http::Response<Unary> {
    let mut trailers = http::HeaderMap::new();
    let status = if message.is_some() { "0" } else { "12" };
    trailers.insert("grpc-status", http::HeaderValue::from_static(status));
    let framed = message.map(|m| {
        let mut b = Vec::with_capacity(m.len() + 5);
        b.push(0);
        b.extend_from_slice(&(m.len() as u32).to_be_bytes());
        b.extend_from_slice(&m);
        Bytes::from(b)
    });
    let mut response = http::Response::new(Unary {
        message: framed,
        trailers: Some(trailers),
    });
    let grpc = http::HeaderValue::from_static("application/grpc");
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, grpc);
    response
}

/// Serves `images` as a CRI runtime on the unix socket `path`, until dropped
/// with the runtime.
pub fn serve_cri(path: &Path, images: v1::ListImagesResponse) -> std::io::Result<()> {
    let listener = tokio::net::UnixListener::bind(path)?;
    let list = Bytes::from(images.encode_to_vec());
    let fs = crate::fleet::image_fs();
    let fs = Bytes::from(fs.encode_to_vec());
    let answers = Arc::new((list, fs));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answers = answers.clone();
            let service = hyper::service::service_fn(move |request: http::Request<_>| {
                let message = match request.uri().path() {
                    "/runtime.v1.ImageService/ListImages" => Some(answers.0.to_vec()),
                    "/runtime.v1.ImageService/ImageFsInfo" => Some(answers.1.to_vec()),
                    _ => None,
                };
                async move { Ok::<_, Infallible>(unary(message)) }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Ok(())
}

/// The real agent's memory: resident and peak, MiB.
pub struct AgentMemory {
    pub images: usize,
    pub json_bytes: usize,
    pub rss_mib: f64,
    pub hwm_mib: f64,
    pub readings: u32,
}

/// Runs `binary agent` against a CRI server holding `images`, reads its answer
/// (whole, gzip, then conditional: a 304) every second for `settle`, and
/// reads its memory.
pub async fn measure_agent(
    binary: &str,
    images: v1::ListImagesResponse,
    settle: Duration,
) -> Result<AgentMemory, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let socket = dir.path().join("cri.sock");
    let count = images.images.len();
    serve_cri(&socket, images).map_err(|e| format!("{}: {e}", socket.display()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut child = std::process::Command::new(binary)
        .args(["--log-format", "json", "agent", "--node-name", "bench-node"])
        .arg("--cri-endpoint")
        .arg(format!("unix://{}", socket.display()))
        .args(["--interval", "1s", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the agent: {e}"))?;
    let pid = child.id();
    let result = read_agent(port, pid, count, settle).await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

async fn read_agent(
    port: u16,
    pid: u32,
    count: usize,
    settle: Duration,
) -> Result<AgentMemory, String> {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/images");
    let start = Instant::now();
    let (tag, json_bytes) = loop {
        if start.elapsed() > Duration::from_secs(30) {
            return Err("the agent did not answer /v1/images within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(r) = client.get(&url).send().await else {
            continue;
        };
        if r.status() != 200 {
            continue;
        }
        let tag = r.headers().get("etag").and_then(|v| v.to_str().ok());
        let tag = tag.map(str::to_string).ok_or("no ETag on /v1/images")?;
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        break (tag, body.len());
    };
    let mut readings = 0;
    while start.elapsed() < settle {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let gzip = client.get(&url).header("accept-encoding", "gzip").send();
        let gzip = gzip.await.map_err(|e| e.to_string())?;
        let _ = gzip.bytes().await;
        let again = client.get(&url).header("if-none-match", &tag).send();
        let status = again.await.map_err(|e| e.to_string())?.status();
        if status != 304 {
            return Err(format!("a conditional read got {status}, not 304"));
        }
        readings += 1;
    }
    let (rss_mib, hwm_mib) = crate::process::proc_status(pid);
    Ok(AgentMemory {
        images: count,
        json_bytes,
        rss_mib,
        hwm_mib,
        readings,
    })
}
