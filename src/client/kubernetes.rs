//! The Kubernetes API client every source uses, built in one place, with a tower
//! layer that counts each request by verb and status code and times it, in the
//! style of client-go's `rest_client_*` and kube-state-metrics'
//! `kube_state_metrics_list_total`.

use http::{Method, Request, Response};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

/// Where the client's configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// A kubeconfig file read instead of `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of its current context.
    pub context: Option<String>,
}

/// Why no client for the cluster can be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No in-cluster configuration, and no usable `KUBECONFIG` or `~/.kube/config`.
    #[error("{0}")]
    Infer(kube::config::InferConfigError),
    /// The kubeconfig file given cannot be read or used.
    #[error("kubeconfig {path}: {1}", path = .0.display())]
    File(PathBuf, kube::config::KubeconfigError),
    /// The default kubeconfig cannot be read, or has not the context given.
    #[error("{0}")]
    Context(kube::config::KubeconfigError),
    /// The configuration found cannot make a client (its TLS settings, say).
    #[error("{0}")]
    Client(kube::Error),
}

/// A client for the cluster: with neither option, as `kubectl` does it (in-cluster
/// configuration, else `KUBECONFIG` or `~/.kube/config`); otherwise that kubeconfig
/// file and context. Every request goes through `requests` when given.
pub async fn build(
    options: &ClientOptions,
    requests: Option<&KubeRequests>,
) -> Result<Client, BuildError> {
    let kube_options = KubeConfigOptions {
        context: options.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&options.kubeconfig, &options.context) {
        (None, None) => Config::infer().await.map_err(BuildError::Infer)?,
        (Some(path), _) => {
            let in_file = |e| BuildError::File(path.clone(), e);
            let kubeconfig = Kubeconfig::read_from(path).map_err(in_file)?;
            Config::from_custom_kubeconfig(kubeconfig, &kube_options)
                .await
                .map_err(in_file)?
        }
        (None, Some(_)) => Config::from_kubeconfig(&kube_options)
            .await
            .map_err(BuildError::Context)?,
    };
    let builder = ClientBuilder::try_from(config)
        .map_err(BuildError::Client)?
        .with_layer(&TidyQuery);
    Ok(match requests {
        Some(r) => builder.with_layer(r).build(),
        None => builder.build(),
    })
}

pub use crate::metrics::KubeRequests;

/// The Kubernetes API verb of a request, as the API server names it in its audit
/// log and metrics: `list`, `watch`, `get`, `create`, `update`, `patch`,
/// `delete`, `deletecollection`; for other methods and paths, the lowercase method.
pub fn verb(method: &Method, path: &str, query: Option<&str>) -> &'static str {
    let watch = query.is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1" | "watch"))
    });
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // /api/{version}/... or /apis/{group}/{version}/...
    let rest = match parts.as_slice() {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return lower(method),
    };
    // A namespaced resource drops the namespaces/{ns} prefix, except for the
    // namespace object itself and its own subresources.
    let rest = match rest {
        ["namespaces", _, resource, tail @ ..] if !matches!(*resource, "status" | "finalize") => {
            let mut v = vec![*resource];
            v.extend_from_slice(tail);
            v
        }
        other => other.to_vec(),
    };
    if rest.is_empty() {
        return lower(method);
    }
    let named = rest.len() >= 2;
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => lower(method),
    }
}

fn lower(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::HEAD => "head",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::OPTIONS => "options",
        _ => "other",
    }
}

impl<S> Layer<S> for KubeRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            requests: self.clone(),
        }
    }
}

/// A service that records each request in [`KubeRequests`].
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    requests: KubeRequests,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Counted<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let verb = verb(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        let requests = self.requests.clone();
        let start = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            requests.observe(verb, code, start.elapsed().as_secs_f64());
            result
        })
    }
}

/// Drops the empty pair kube's request builder leaves at the start of every query
/// (`/api/v1/nodes?&limit=500`), so that what the API server's audit log and any
/// proxy in between see is the usual `?limit=500`. A [`Layer`] for
/// [`ClientBuilder::with_layer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TidyQuery;

impl<S> Layer<S> for TidyQuery {
    type Service = Tidied<S>;

    fn layer(&self, inner: S) -> Tidied<S> {
        Tidied { inner }
    }
}

/// A service that sends each request with its query tidied by [`tidy_query`].
#[derive(Clone)]
pub struct Tidied<S> {
    inner: S,
}

impl<S, ReqBody> Service<Request<ReqBody>> for Tidied<S>
where
    S: Service<Request<ReqBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if let Some(uri) = tidy_query(request.uri()) {
            *request.uri_mut() = uri;
        }
        self.inner.call(request)
    }
}

/// The URI without empty pairs in its query (`?&a=1&&b=2&` -> `?a=1&b=2`, `?` or
/// `?&` -> no query); `None` when there is nothing to tidy.
pub fn tidy_query(uri: &http::Uri) -> Option<http::Uri> {
    let pq = uri.path_and_query()?;
    let query = pq.query()?;
    let pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    let tidy = pairs.join("&");
    let path_and_query = if tidy.is_empty() {
        pq.path().to_string()
    } else {
        format!("{}?{tidy}", pq.path())
    };
    if path_and_query == pq.as_str() {
        return None;
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use proptest::prelude::*;

    #[test]
    fn queries_lose_their_empty_pairs_and_nothing_else() {
        for (from, to) in [
            ("/api/v1/nodes?&limit=500", Some("/api/v1/nodes?limit=500")),
            (
                "/api/v1/nodes?&watch=true&&resourceVersion=5&",
                Some("/api/v1/nodes?watch=true&resourceVersion=5"),
            ),
            (
                "https://10.0.0.1:6443/api/v1/nodes?&limit=1",
                Some("https://10.0.0.1:6443/api/v1/nodes?limit=1"),
            ),
            ("/api/v1/nodes?&", Some("/api/v1/nodes")),
            ("/api/v1/nodes?", Some("/api/v1/nodes")),
            ("/api/v1/nodes?limit=500", None),
            ("/api/v1/nodes", None),
        ] {
            let uri: http::Uri = from.parse().unwrap();
            assert_eq!(
                tidy_query(&uri).map(|u| u.to_string()).as_deref(),
                to,
                "{from}"
            );
        }
    }

    #[test]
    fn kube_requests_are_sent_without_the_stray_ampersand() {
        let lp = kube::api::ListParams::default().limit(500);
        let built = kube::core::Request::new("/api/v1/nodes").list(&lp).unwrap();
        assert_eq!(
            built.uri().query(),
            Some("&limit=500"),
            "kube's builder leaves an empty pair; if this changes the layer is moot"
        );
        let tidied = tidy_query(built.uri()).unwrap();
        assert_eq!(tidied.query(), Some("limit=500"));
    }

    #[test]
    fn verbs_as_the_api_server_names_them() {
        let get = Method::GET;
        for (method, path, query, want) in [
            (&get, "/api/v1/nodes", None, "list"),
            (
                &get,
                "/api/v1/nodes",
                Some("limit=500&labelSelector=a%3Db"),
                "list",
            ),
            (
                &get,
                "/api/v1/nodes",
                Some("watch=true&resourceVersion=5"),
                "watch",
            ),
            (
                &get,
                "/api/v1/nodes",
                Some("allowWatchBookmarks=true&watch=1"),
                "watch",
            ),
            (&get, "/api/v1/nodes/n1", None, "get"),
            (&get, "/api/v1/nodes/n1/proxy/configz", None, "get"),
            (
                &get,
                "/apis/apps/v1/namespaces/jhub/daemonsets",
                None,
                "list",
            ),
            (
                &get,
                "/apis/apps/v1/namespaces/jhub/daemonsets",
                Some("watch=true"),
                "watch",
            ),
            (&get, "/apis/apps/v1/daemonsets", None, "list"),
            (
                &get,
                "/apis/kubefledged.io/v1alpha2/namespaces/kf/imagecaches/c",
                None,
                "get",
            ),
            (&get, "/api/v1/namespaces", None, "list"),
            (&get, "/api/v1/namespaces/kf", None, "get"),
            (&get, "/api/v1/namespaces/kf/status", None, "get"),
            (&Method::POST, "/api/v1/namespaces/kf/pods", None, "create"),
            (&Method::PUT, "/api/v1/nodes/n1", None, "update"),
            (&Method::PATCH, "/api/v1/nodes/n1", None, "patch"),
            (&Method::DELETE, "/api/v1/nodes/n1", None, "delete"),
            (&Method::DELETE, "/api/v1/nodes", None, "deletecollection"),
            (&get, "/version", None, "get"),
            (&get, "/api", None, "get"),
            (&get, "/apis/apps/v1", None, "get"),
            (&Method::OPTIONS, "/api/v1/nodes", None, "options"),
        ] {
            assert_eq!(verb(method, path, query), want, "{method} {path} {query:?}");
        }
    }

    #[test]
    fn families_are_encoded() {
        let mut registry = Registry::default();
        let r = KubeRequests::register(&mut registry);
        r.observe("list", "200".into(), 0.01);
        r.observe("list", "200".into(), 0.2);
        r.observe("watch", "error".into(), 3.0);
        let mut text = String::new();
        prometheus_client::encoding::text::encode_registry(&mut text, &registry).unwrap();
        for line in [
            "# TYPE imagecap_kube_requests counter",
            "imagecap_kube_requests_total{verb=\"list\",code=\"200\"} 2",
            "imagecap_kube_requests_total{verb=\"watch\",code=\"error\"} 1",
            "# TYPE imagecap_kube_request_duration_seconds histogram",
            "imagecap_kube_request_duration_seconds_bucket{le=\"0.025\",verb=\"list\"} 1",
            "imagecap_kube_request_duration_seconds_bucket{le=\"+Inf\",verb=\"list\"} 2",
            "imagecap_kube_request_duration_seconds_count{verb=\"watch\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }

    #[tokio::test]
    async fn the_layer_counts_responses_and_failures() {
        use tower::ServiceExt;
        let mut registry = Registry::default();
        let r = KubeRequests::register(&mut registry);
        let answer = tower::service_fn(|req: Request<()>| async move {
            if req.uri().path().ends_with("/broken") {
                Err("connection refused")
            } else {
                Ok::<_, &str>(
                    Response::builder()
                        .status(if req.uri().query().is_some() {
                            200
                        } else {
                            404
                        })
                        .body(())
                        .unwrap(),
                )
            }
        });
        let svc = r.layer(answer);
        let send = |uri: &str| {
            let svc = svc.clone();
            let req = Request::get(uri).body(()).unwrap();
            async move { svc.oneshot(req).await }
        };
        send("/api/v1/nodes?limit=5").await.unwrap();
        send("/api/v1/nodes?watch=true").await.unwrap();
        send("/api/v1/nodes/gone").await.unwrap();
        assert!(send("/api/v1/nodes/broken").await.is_err());
        let count = |verb, code: &str| r.count(verb, code);
        assert_eq!(count("list", "200"), 1);
        assert_eq!(count("watch", "200"), 1);
        assert_eq!(count("get", "404"), 1);
        assert_eq!(count("get", "error"), 1);
    }

    proptest! {
        #[test]
        fn any_path_has_a_verb(path in "(/[a-z0-9.]{0,6}){0,8}", query in proptest::option::of("[a-z=&]{0,20}")) {
            let v = verb(&Method::GET, &path, query.as_deref());
            prop_assert!(["list", "watch", "get"].contains(&v), "{}", v);
        }
    }
}
