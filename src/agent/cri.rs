//! The CRI v1 client: the runtime's `ImageService` and `RuntimeService` over its
//! unix socket, limited to the calls the agent makes: reading the images
//! (`ListImages`, `ImageFsInfo`) and what pruning them takes (`ListContainers`,
//! which images containers use; `ImageStatus`, when an image was built;
//! `RemoveImage`).
//!
//! The client code is generated at build time from `proto/api.proto` (see
//! `build.rs`). That file also declares the sandbox and container life-cycle
//! calls the end-to-end tests make to create real containers; this client does
//! not call them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tonic::transport::{Channel, Endpoint};

/// The generated `runtime.v1` messages and client.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

use v1::image_service_client::ImageServiceClient;
use v1::runtime_service_client::RuntimeServiceClient;

/// Largest CRI response decoded. tonic's default is 4 MiB; `ListImages` on a node
/// holding thousands of images, each with several tags and digests, can exceed
/// that (the kubelet itself accepts 16 MiB from the runtime). 64 MiB leaves room
/// for the biggest nodes while still bounding what a misbehaving runtime can make
/// the agent allocate.
pub const MAX_DECODING_MESSAGE_SIZE: usize = 64 << 20;

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

/// One image as `ImageStatus` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDetails {
    pub image: v1::Image,
    /// When the image was built: its OCI image config's `created`, read from the
    /// verbose answer by [`created_from_info`]; `None` when the config has none
    /// (it is optional) or the runtime did not say.
    pub created: Option<SystemTime>,
}

/// The runtime's image and runtime services on one socket. The channel connects
/// lazily and reconnects on the next call after the runtime went away, so a
/// runtime restart needs nothing from the caller.
#[derive(Clone)]
pub struct Client {
    images: ImageServiceClient<Channel>,
    runtime: RuntimeServiceClient<Channel>,
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
            images: ImageServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
            runtime: RuntimeServiceClient::new(channel)
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
        let mut client = self.images.clone();
        let call = client.list_images(self.request(v1::ListImagesRequest {}));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => Ok(r?.into_inner()),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    /// `runtime.v1.ImageService/ImageFsInfo`.
    pub async fn image_fs_info(&self) -> Result<v1::ImageFsInfoResponse, CallError> {
        let mut client = self.images.clone();
        let call = client.image_fs_info(self.request(v1::ImageFsInfoRequest {}));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => Ok(r?.into_inner()),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    /// `runtime.v1.RuntimeService/ListContainers`, every container in any state
    /// (no filter): created, running, exited and unknown ones all hold their image.
    pub async fn list_containers(&self) -> Result<Vec<v1::Container>, CallError> {
        let mut client = self.runtime.clone();
        let call = client.list_containers(self.request(v1::ListContainersRequest { filter: None }));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => Ok(r?.into_inner().containers),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    /// The image the runtime runs its pod sandboxes from, from a verbose
    /// `runtime.v1.RuntimeService/Status` ([`sandbox_image_from_info`]); `None`
    /// when the runtime does not say.
    pub async fn sandbox_image(&self) -> Result<Option<String>, CallError> {
        let mut client = self.runtime.clone();
        let call = client.status(self.request(v1::StatusRequest { verbose: true }));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => Ok(sandbox_image_from_info(&r?.into_inner().info)),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    /// `runtime.v1.ImageService/ImageStatus` of the image `id` (an image id, or
    /// any name the runtime resolves), verbose, so the answer carries the image
    /// config's `created` time. `None` when the runtime does not hold the image:
    /// the API answers with no image then; a `NotFound` status, which some
    /// runtimes may send instead, means the same.
    pub async fn image_status(&self, id: &str) -> Result<Option<ImageDetails>, CallError> {
        let mut client = self.images.clone();
        let call = client.image_status(self.request(v1::ImageStatusRequest {
            image: Some(v1::ImageSpec {
                image: id.to_string(),
            }),
            verbose: true,
        }));
        let response = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) if status.code() == tonic::Code::NotFound => return Ok(None),
            Ok(Err(status)) => return Err(status.into()),
            Err(_) => return Err(CallError::Timeout(self.timeout)),
        };
        Ok(response.image.map(|image| ImageDetails {
            image,
            created: created_from_info(&response.info),
        }))
    }

    /// `runtime.v1.ImageService/RemoveImage` of the image `id`. The API makes it
    /// idempotent: removing an image that is gone is not an error.
    pub async fn remove_image(&self, id: &str) -> Result<(), CallError> {
        let mut client = self.images.clone();
        let call = client.remove_image(self.request(v1::RemoveImageRequest {
            image: Some(v1::ImageSpec {
                image: id.to_string(),
            }),
        }));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map(|_| ()).map_err(CallError::from),
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

/// The pod sandbox ("pause") image in a verbose `Status` answer: containerd
/// puts its CRI configuration, JSON, under `config`, with `sandboxImage`; a
/// `pauseImage` or `pause_image` key (CRI-O's name for the setting) is read too.
/// `None` when no such non-empty string is there.
pub fn sandbox_image_from_info(info: &HashMap<String, String>) -> Option<String> {
    let config: serde_json::Value = serde_json::from_str(info.get("config")?).ok()?;
    ["sandboxImage", "pauseImage", "pause_image"]
        .iter()
        .find_map(|k| config.get(k)?.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// When an image was built, from a verbose `ImageStatus` answer's `info` map:
/// the `created` time (RFC 3339) of its OCI image config. containerd and CRI-O
/// answer alike here: key `"info"` holds a JSON object whose `imageSpec` is the
/// image config (containerd adds `chainID` and more beside it, CRI-O `labels`).
/// `None` when any of that is missing or malformed: `created` is optional in an
/// OCI config, and another runtime may say nothing.
pub fn created_from_info(info: &HashMap<String, String>) -> Option<SystemTime> {
    #[derive(serde::Deserialize)]
    struct Info {
        #[serde(rename = "imageSpec")]
        image_spec: Option<ImageConfig>,
    }
    #[derive(serde::Deserialize)]
    struct ImageConfig {
        created: Option<String>,
    }
    let info: Info = serde_json::from_str(info.get("info")?).ok()?;
    parse_rfc3339(info.image_spec?.created.as_deref()?)
}

/// An RFC 3339 time with any offset (`Z`, `+02:00`, `-05:30`) and fractional
/// seconds (to the nanosecond; digits past the ninth are dropped), as Go writes a
/// `time.Time` to JSON and as containerd passes an image's `created` on, its
/// offset kept; `None` for anything else, a time without an offset included, or
/// one before 1970.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    // The shortest valid form, `YYYY-MM-DDTHH:MM:SSZ`, is 20 bytes.
    if s.len() < 20 || !s.is_ascii() {
        return None;
    }
    let (local, offset_secs) = match s.as_bytes()[s.len() - 1] {
        b'Z' | b'z' => (&s[..s.len() - 1], 0i64),
        _ => {
            let (local, zone) = s.split_at(s.len() - 6);
            let z = zone.as_bytes();
            let sign = match z[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if z[3] != b':' || !z[1..3].iter().chain(&z[4..]).all(u8::is_ascii_digit) {
                return None;
            }
            let hours: i64 = zone[1..3].parse().ok()?;
            let minutes: i64 = zone[4..].parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            (local, sign * (hours * 3600 + minutes * 60))
        }
    };
    // humantime reads the date and time as UTC; the offset is applied after.
    let as_utc = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    if offset_secs >= 0 {
        as_utc.checked_sub(shift)
    } else {
        as_utc.checked_add(shift)
    }
    .filter(|t| *t >= SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    fn info(json: &str) -> HashMap<String, String> {
        HashMap::from([("info".to_string(), json.to_string())])
    }

    fn at(s: &str) -> Option<SystemTime> {
        Some(humantime::parse_rfc3339(s).unwrap())
    }

    /// The `info` map as containerd 1.6 answers a verbose `ImageStatus` (trimmed).
    #[test]
    fn created_from_containerds_info() {
        let json = r#"{"chainID":"sha256:2c1e","imageSpec":{"created":"2024-03-05T10:20:30.123456789Z","architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}}"#;
        let created = created_from_info(&info(json));
        assert_eq!(created, at("2024-03-05T10:20:30.123456789Z"));
        assert_eq!(
            created
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
            123_456_789
        );
    }

    /// CRI-O: `labels` beside `imageSpec`, the rest as containerd.
    #[test]
    fn created_from_cri_os_info() {
        let json =
            r#"{"labels":{"a":"b"},"imageSpec":{"created":"2023-11-30T23:59:59Z","os":"linux"}}"#;
        assert_eq!(created_from_info(&info(json)), at("2023-11-30T23:59:59Z"));
    }

    #[test]
    fn created_with_offsets_and_fractions() {
        let created =
            |t: &str| created_from_info(&info(&format!(r#"{{"imageSpec":{{"created":"{t}"}}}}"#)));
        for (given, utc) in [
            ("2024-03-05T10:20:30Z", "2024-03-05T10:20:30Z"),
            ("2024-03-05T10:20:30z", "2024-03-05T10:20:30Z"),
            ("2024-03-05T10:20:30.5Z", "2024-03-05T10:20:30.5Z"),
            (
                "2024-03-05T10:20:30.000000001Z",
                "2024-03-05T10:20:30.000000001Z",
            ),
            ("2024-03-05T10:20:30+00:00", "2024-03-05T10:20:30Z"),
            ("2024-03-05T12:20:30+02:00", "2024-03-05T10:20:30Z"),
            ("2024-03-05T12:20:30.25+02:00", "2024-03-05T10:20:30.25Z"),
            ("2024-03-05T04:50:30-05:30", "2024-03-05T10:20:30Z"),
            // Across a day, a month and a year.
            ("2024-01-01T01:00:00+02:00", "2023-12-31T23:00:00Z"),
            ("2024-02-29T23:30:00-01:00", "2024-03-01T00:30:00Z"),
            ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
        ] {
            assert_eq!(created(given), at(utc), "{given}");
        }
        for bad in [
            "",
            "yesterday",
            "2024-03-05",
            "2024-03-05T10:20:30",       // no offset
            "2024-03-05 10:20:30Z",      // no T
            "2024-03-05T10:20:30+0200",  // offset without a colon
            "2024-03-05T10:20:30+24:00", // no such offset
            "2024-03-05T10:20:30+02:60",
            "2024-03-05T10:20:30#02:00",
            "2024-13-05T10:20:30Z", // no such month
            "2024-02-30T10:20:30Z", // no such day
            "2024-03-05T25:20:30Z",
            "2024-03-05T10:20:30.x5Z",
            "1969-12-31T23:59:59Z",      // before the epoch
            "1970-01-01T00:30:00+01:00", // the same
            "2024-03-05T10:20:30Zé",
        ] {
            assert_eq!(created(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn no_created_time_is_none() {
        // No "info" key (not verbose, or a runtime that says nothing).
        assert_eq!(created_from_info(&HashMap::new()), None);
        let other = HashMap::from([(
            "config".to_string(),
            r#"{"imageSpec":{"created":"2024-03-05T10:20:30Z"}}"#.to_string(),
        )]);
        assert_eq!(created_from_info(&other), None);
        // Not JSON, or JSON of another shape.
        for json in [
            "",
            "{",
            "not json",
            "null",
            "[]",
            r#""imageSpec""#,
            "{}",
            r#"{"imageSpec":null}"#,
            r#"{"imageSpec":{}}"#,
            r#"{"imageSpec":{"created":null}}"#,
            r#"{"imageSpec":{"created":1709634030}}"#,
            r#"{"imageSpec":"2024-03-05T10:20:30Z"}"#,
            r#"{"imageSpec":{"created":"2024-03-05T10:20:30Z"}"#, // truncated
        ] {
            assert_eq!(created_from_info(&info(json)), None, "{json}");
        }
    }

    /// `ImageStatusResponse` and `ListContainersResponse` as a runtime implementing
    /// the full API sends them: fields this subset leaves out are skipped, and
    /// `Container.image_id` (field 10) is read.
    #[test]
    fn the_subset_reads_image_status_and_containers() {
        use prost::Message;
        let image = v1::Image {
            id: "sha256:c0".into(),
            repo_tags: vec!["a:1".into()],
            size: 5,
            ..Default::default()
        };
        let mut status = v1::ImageStatusResponse {
            image: Some(image.clone()),
            info: info(r#"{"imageSpec":{"created":"2024-03-05T10:20:30Z"}}"#),
        }
        .encode_to_vec();
        status.extend_from_slice(&[0xa0, 0x06, 0x01]); // an unknown field (100)
        let decoded = v1::ImageStatusResponse::decode(status.as_slice()).unwrap();
        assert_eq!(decoded.image, Some(image));
        assert_eq!(created_from_info(&decoded.info), at("2024-03-05T10:20:30Z"));
        // No image: the runtime does not hold it.
        assert_eq!(
            v1::ImageStatusResponse::decode(&[][..]).unwrap().image,
            None
        );

        let container: Vec<u8> = [
            &[0x0a, 0x01][..],
            b"c",
            &[0x12, 0x01],
            b"p",
            &[0x22, 0x03, 0x0a, 0x01, b'i'], // image: ImageSpec { image: "i" }
            &[0x2a, 0x02],
            b"ir",
            &[0x30, 0x01], // state: running
            &[0x38, 0x07], // created_at
            &[0x52, 0x03],
            b"iid",
        ]
        .concat();
        let mut list = vec![0x0a, container.len() as u8];
        list.extend_from_slice(&container);
        let decoded = v1::ListContainersResponse::decode(list.as_slice()).unwrap();
        assert_eq!(
            decoded.containers,
            [v1::Container {
                id: "c".into(),
                pod_sandbox_id: "p".into(),
                image: Some(v1::ImageSpec { image: "i".into() }),
                image_ref: "ir".into(),
                state: v1::ContainerState::ContainerRunning as i32,
                created_at: 7,
                image_id: "iid".into(),
                ..Default::default()
            }]
        );
    }

    #[test]
    fn the_sandbox_image_is_read_from_the_runtime_config() {
        let info = |config: &str| HashMap::from([("config".to_string(), config.to_string())]);
        assert_eq!(
            sandbox_image_from_info(&info(
                r#"{"containerd":{"snapshotter":"native"},"sandboxImage":"registry.k8s.io/pause:3.6"}"#
            ))
            .as_deref(),
            Some("registry.k8s.io/pause:3.6")
        );
        assert_eq!(
            sandbox_image_from_info(&info(r#"{"pause_image":"registry.k8s.io/pause:3.9"}"#))
                .as_deref(),
            Some("registry.k8s.io/pause:3.9")
        );
        for none in [
            r#"{"sandboxImage":""}"#,
            r#"{"sandboxImage":7}"#,
            "not json",
            "{}",
            "[]",
        ] {
            assert_eq!(sandbox_image_from_info(&info(none)), None, "{none}");
        }
        assert_eq!(sandbox_image_from_info(&HashMap::new()), None);
    }

    proptest! {
        #[test]
        fn decoding_anything_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            use prost::Message;
            let _ = v1::ListImagesResponse::decode(bytes.as_slice());
            let _ = v1::ImageFsInfoResponse::decode(bytes.as_slice());
            let _ = v1::ImageStatusResponse::decode(bytes.as_slice());
            let _ = v1::ListContainersResponse::decode(bytes.as_slice());
        }

        #[test]
        fn created_from_info_never_panics(
            key in prop_oneof![Just("info".to_string()), "\\PC{0,8}"],
            value in prop_oneof![
                "\\PC*",
                "[-+:.0-9TZz]{0,40}".prop_map(|t| format!(r#"{{"imageSpec":{{"created":"{t}"}}}}"#)),
                "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?([Zz]|[-+][0-9]{2}:[0-9]{2})?"
                    .prop_map(|t| format!(r#"{{"imageSpec":{{"created":"{t}"}}}}"#)),
            ],
        ) {
            let _ = created_from_info(&HashMap::from([(key, value)]));
        }

        /// Any UTC time since the epoch, written with any offset, reads back as itself.
        #[test]
        fn an_offset_names_the_same_instant(
            secs in 86_400u64..4_000_000_000,
            nanos in 0u32..1_000_000_000,
            offset_minutes in -(23 * 60 + 59)..=(23i64 * 60 + 59),
        ) {
            let t = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
            let local = humantime::format_rfc3339_nanos(t).to_string();
            // Shift the wall clock by the offset, then name the offset.
            let shifted = if offset_minutes >= 0 {
                t + Duration::from_secs(offset_minutes as u64 * 60)
            } else {
                t - Duration::from_secs(offset_minutes.unsigned_abs() * 60)
            };
            let wall = humantime::format_rfc3339_nanos(shifted).to_string();
            let sign = if offset_minutes < 0 { '-' } else { '+' };
            let m = offset_minutes.unsigned_abs();
            let with_offset = format!("{}{sign}{:02}:{:02}", &wall[..wall.len() - 1], m / 60, m % 60);
            prop_assert_eq!(parse_rfc3339(&local), Some(t));
            prop_assert_eq!(parse_rfc3339(&with_offset), Some(t), "{}", with_offset);
        }
    }
}
