//! Thousands of node agents in this process, each on its own loopback port,
//! serving `/v1/images` with the agent's own code (`imagecap_exporter::agent`:
//! the same JSON, ETag, `If-None-Match`, gzip and layers as the real agent), and
//! counting every byte that crosses their sockets, headers included.

use crate::nodegen::{Cluster, PoolImage};
use imagecap_exporter::agent::cri::v1;
use imagecap_exporter::agent::report::{Snapshot, agent_report};
use imagecap_exporter::agent::{Agent, router};
use imagecap_exporter::serve::auth::BasicAuth;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// What the agents moved and answered, summed over all of them.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes read and written on the agents' sockets.
    pub bytes: AtomicU64,
    pub connections: AtomicU64,
    pub full: AtomicU64,
    pub not_modified: AtomicU64,
    pub other: AtomicU64,
}

/// A reading of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub bytes: u64,
    pub connections: u64,
    pub full: u64,
    pub not_modified: u64,
    pub other: u64,
}

impl Counters {
    pub fn tally(&self) -> Tally {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Tally {
            bytes: get(&self.bytes),
            connections: get(&self.connections),
            full: get(&self.full),
            not_modified: get(&self.not_modified),
            other: get(&self.other),
        }
    }
}

impl std::ops::Sub for Tally {
    type Output = Tally;
    fn sub(self, o: Tally) -> Tally {
        Tally {
            bytes: self.bytes - o.bytes,
            connections: self.connections - o.connections,
            full: self.full - o.full,
            not_modified: self.not_modified - o.not_modified,
            other: self.other - o.other,
        }
    }
}

/// A connection whose bytes are counted.
struct Counted {
    inner: TcpStream,
    counters: Arc<Counters>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.counters.bytes.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters.bytes.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A loopback listener whose connections are [`Counted`].
struct CountingListener {
    inner: TcpListener,
    counters: Arc<Counters>,
}

impl axum::serve::Listener for CountingListener {
    type Io = Counted;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Counted, std::net::SocketAddr) {
        let (inner, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        let counters = self.counters.clone();
        (Counted { inner, counters }, addr)
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// One CRI image from a generated one: digests and tags apart, an id from the
/// first digest.
pub fn cri_image(image: &PoolImage, n: usize) -> v1::Image {
    let (digests, tags): (Vec<String>, Vec<String>) =
        image.names.iter().cloned().partition(|n| n.contains('@'));
    let id = match digests.first().and_then(|d| d.split_once('@')) {
        Some((_, digest)) => digest.to_string(),
        None => format!("sha256:{n:064x}"),
    };
    v1::Image {
        id,
        repo_tags: tags,
        repo_digests: digests,
        size: image.size_bytes,
        pinned: false,
    }
}

/// What the runtime of node `i` holds: `images` of the cluster's images, with
/// `extra` more when its list changed.
pub fn runtime_images(cluster: &Cluster, i: usize, extra: usize) -> v1::ListImagesResponse {
    let mut images: Vec<v1::Image> = cluster
        .node_images(i)
        .into_iter()
        .enumerate()
        .map(|(n, im)| cri_image(im, n))
        .collect();
    for k in 0..extra {
        images.push(v1::Image {
            id: format!("sha256:{:064x}", (i << 20) + k),
            repo_tags: vec![format!("registry.example.com/bench/changed:{k}")],
            repo_digests: vec![],
            size: 1_000_000,
            pinned: false,
        });
    }
    v1::ListImagesResponse { images }
}

/// What a runtime tells of its image filesystem: 150 GB used.
pub fn image_fs() -> v1::ImageFsInfoResponse {
    v1::ImageFsInfoResponse {
        image_filesystems: vec![v1::FilesystemUsage {
            timestamp: 1,
            fs_id: None,
            used_bytes: Some(v1::UInt64Value {
                value: 150_000_000_000,
            }),
            inodes_used: None,
        }],
        container_filesystems: vec![],
    }
}

/// A reading of node `i`'s runtime, now.
fn snapshot(cluster: &Cluster, i: usize, extra: usize) -> Snapshot {
    let fs = image_fs();
    let now = SystemTime::now();
    let list = runtime_images(cluster, i, extra);
    let report = agent_report(&cluster.node_name(i), now, list, Some(&fs));
    Snapshot::new(&report, now).expect("a generated report serializes")
}

/// The agents, one per node of the cluster.
pub struct Fleet {
    agents: Vec<Agent>,
    pub ports: Vec<u16>,
    pub counters: Arc<Counters>,
    /// The size of each agent's first answer (plain JSON), summed.
    pub json_bytes: u64,
}

impl Fleet {
    /// Starts an agent per node, each having read its runtime once.
    pub async fn start(cluster: &Cluster) -> Result<Fleet, String> {
        let counters = Arc::new(Counters::default());
        let settings = imagecap_exporter::config::agent::AgentConfig::default().prune;
        let auth = Arc::new(BasicAuth::new(Default::default()));
        let (mut agents, mut ports, mut json_bytes) = (Vec::new(), Vec::new(), 0u64);
        for i in 0..cluster.nodes {
            let agent = Agent::new(&cluster.node_name(i), &settings);
            let s = snapshot(cluster, i, 0);
            json_bytes += s.json.len() as u64;
            agent.record(Ok(s));
            let inner = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("agent {i}: binding on loopback: {e}"))?;
            ports.push(inner.local_addr().map_err(|e| e.to_string())?.port());
            let listener = CountingListener {
                inner,
                counters: counters.clone(),
            };
            let counted = counters.clone();
            let app = router(agent.clone(), auth.clone()).layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let counted = counted.clone();
                    async move {
                        let response = next.run(request).await;
                        count_answer(&counted, response.status().as_u16());
                        response
                    }
                },
            ));
            tokio::spawn(async move { axum::serve(listener, app).await });
            agents.push(agent);
        }
        Ok(Fleet {
            agents,
            ports,
            counters,
            json_bytes,
        })
    }

    /// Node `i`'s runtime gains `extra` images: a new reading with a new tag.
    pub fn change(&self, cluster: &Cluster, i: usize, extra: usize) {
        self.agents[i].record(Ok(snapshot(cluster, i, extra)));
    }
}

/// Counts an answer by status.
fn count_answer(counters: &Counters, status: u16) {
    let counter = match status {
        200 => &counters.full,
        304 => &counters.not_modified,
        _ => &counters.other,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}
