//! Prometheus metrics of one server (PROTOCOL §13): one registry per [`crate::state::AppState`],
//! so that several servers in one process (the tests) keep their own numbers.
//!
//! Counters and histograms are updated where things happen; gauges of state that is already
//! kept elsewhere (peers online, open streams, the index's commit) are set at scrape time.
//! No label takes a value from users (no peer ids, nicknames or queries): the series count is
//! fixed by the code, whatever the traffic.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Labels of an HTTP request: the route pattern (never the path as sent), method and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The router's pattern, such as `/api/v1/contents/{hash}/sources`, or `unmatched`.
    pub route: String,
    /// A standard method, or `other`.
    pub method: &'static str,
    /// The response status code.
    pub status: u16,
}

/// Label of a per-route latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The router's pattern.
    pub route: String,
}

/// How a search ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok`, `busy` (no search slot within the queue wait) or `error`.
    pub outcome: &'static str,
}

/// Which upload an entry came in.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabel {
    /// `list` (a whole list) or `delta`.
    pub kind: &'static str,
}

/// Peers by state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerStateLabel {
    /// `registered` or `online`.
    pub state: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every series the server exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabel, Histogram, fn() -> Histogram>,
    /// Searches answered or refused, by outcome.
    pub searches: Family<OutcomeLabel, Counter>,
    /// Time a search took inside the server (queue wait excluded).
    pub search_seconds: Histogram,
    /// File-list entries received, by upload kind.
    pub ingest_entries: Family<IngestLabel, Counter>,
    /// Index: the sequence of the last committed operation (set at scrape).
    pub index_committed_seq: Gauge<i64, AtomicI64>,
    /// Index: Unix time of the last commit, seconds (set at scrape).
    pub index_last_commit: FloatGauge,
    /// Index: operations logged but not yet committed (set at scrape).
    pub index_pending_ops: Gauge<i64, AtomicI64>,
    /// Index: documents searchable (set at scrape).
    pub index_docs: Gauge<i64, AtomicI64>,
    /// Peers registered and online (set at scrape).
    pub peers: Family<PeerStateLabel, Gauge>,
    /// Agents holding a control channel (set at scrape).
    pub control_channels: Gauge,
    /// Open event streams (set at scrape).
    pub event_streams: Gauge,
    /// Standing searches filed (set at scrape).
    pub wishes: Gauge,
    /// Resident memory of the process, bytes (set at scrape, Linux).
    pub resident_memory: Gauge<i64, AtomicI64>,
    /// Open file descriptors of the process (set at scrape, Linux).
    pub open_fds: Gauge<i64, AtomicI64>,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s: a search is a few ms, an upload of a million entries tens of seconds.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Metrics {
    /// A registry with every family registered; `shared` are counters owned by other parts
    /// (the relay's bytes, the holders cache's hits and misses) registered here too.
    pub fn new(shared: SharedCounters) -> Metrics {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("peerdex");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status",
            requests.clone(),
        );
        let request_seconds: Family<RouteLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time to the response head, by route pattern (streamed bodies not included)",
            Unit::Seconds,
            request_seconds.clone(),
        );
        let searches = Family::<OutcomeLabel, Counter>::default();
        registry.register("searches", "Searches, by outcome", searches.clone());
        let search_seconds = latency_histogram();
        registry.register_with_unit(
            "search_duration",
            "Time a search took in the server, queue wait excluded",
            Unit::Seconds,
            search_seconds.clone(),
        );
        let ingest_entries = Family::<IngestLabel, Counter>::default();
        registry.register(
            "ingest_entries",
            "File-list entries received, by upload kind",
            ingest_entries.clone(),
        );
        registry.register(
            "relay_sessions",
            "Relay sessions admitted between a downloader and a firewalled source",
            shared.relay_sessions,
        );
        registry.register_with_unit(
            "relay",
            "Bytes forwarded by the relay",
            Unit::Bytes,
            shared.relay_bytes,
        );
        registry.register(
            "holders_cache_hits",
            "Contents whose holders came from the cache",
            shared.holders_hits,
        );
        registry.register(
            "holders_cache_misses",
            "Contents whose holders were read from the database",
            shared.holders_misses,
        );
        let index_committed_seq = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "index_committed_sequence",
            "Sequence number of the last index operation committed",
            index_committed_seq.clone(),
        );
        let index_last_commit = FloatGauge::default();
        registry.register(
            "index_last_commit_timestamp_seconds",
            "Unix time of the last index commit",
            index_last_commit.clone(),
        );
        let index_pending_ops = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "index_pending_operations",
            "Index operations logged in the database and not yet committed to the index",
            index_pending_ops.clone(),
        );
        let index_docs = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "index_documents",
            "Documents in the search index",
            index_docs.clone(),
        );
        let peers = Family::<PeerStateLabel, Gauge>::default();
        registry.register("peers", "Peers, registered and online", peers.clone());
        let control_channels = Gauge::default();
        registry.register(
            "control_channels",
            "Agents holding a control channel (firewalled or not)",
            control_channels.clone(),
        );
        let event_streams = Gauge::default();
        registry.register(
            "event_streams",
            "Open event streams (server-sent events)",
            event_streams.clone(),
        );
        let wishes = Gauge::default();
        registry.register("wishes", "Standing searches filed", wishes.clone());
        // The process series keep their conventional names, without the prefix.
        let process = &mut root;
        let resident_memory = Gauge::<i64, AtomicI64>::default();
        process.register_with_unit(
            "process_resident_memory",
            "Resident memory of the server process",
            Unit::Bytes,
            resident_memory.clone(),
        );
        let open_fds = Gauge::<i64, AtomicI64>::default();
        process.register(
            "process_open_fds",
            "Open file descriptors of the server process",
            open_fds.clone(),
        );
        let started = FloatGauge::default();
        started.set(peerdex_shared::process::unix_now_secs_f64());
        process.register(
            "process_start_time_seconds",
            "Unix time the server process started",
            started,
        );
        // Series of known label values exist from the start, at 0: a rate over them is 0, not
        // "no data", before the first event.
        for outcome in ["ok", "busy", "error"] {
            let _ = searches.get_or_create(&OutcomeLabel { outcome });
        }
        for kind in ["list", "delta"] {
            let _ = ingest_entries.get_or_create(&IngestLabel { kind });
        }
        for state in ["registered", "online"] {
            let _ = peers.get_or_create(&PeerStateLabel { state });
        }
        Metrics {
            registry: root,
            requests,
            request_seconds,
            searches,
            search_seconds,
            ingest_entries,
            index_committed_seq,
            index_last_commit,
            index_pending_ops,
            index_docs,
            peers,
            control_channels,
            event_streams,
            wishes,
            resident_memory,
            open_fds,
        }
    }

    /// Counts one answered request.
    pub fn observe_request(
        &self,
        route: &str,
        method: &axum::http::Method,
        status: u16,
        took: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method_label(method),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one search.
    pub fn search(&self, outcome: &'static str) {
        self.searches.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts entries received in an upload.
    pub fn ingested(&self, kind: &'static str, entries: u64) {
        self.ingest_entries
            .get_or_create(&IngestLabel { kind })
            .inc_by(entries);
    }

    /// Reads the process's memory and descriptors (Linux; zero elsewhere).
    pub fn sample_process(&self) {
        use peerdex_shared::process;
        self.resident_memory
            .set(process::resident_bytes().unwrap_or(0) as i64);
        self.open_fds.set(process::open_fds().unwrap_or(0) as i64);
    }

    /// The registry in the Prometheus text format (0.0.4).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Counters kept by other parts of the server and exported with the rest.
pub struct SharedCounters {
    /// Bytes the relay forwarded.
    pub relay_bytes: Counter,
    /// Relay sessions admitted.
    pub relay_sessions: Counter,
    /// Holders cache hits.
    pub holders_hits: Counter,
    /// Holders cache misses.
    pub holders_misses: Counter,
}

/// The method as a label of bounded cardinality.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new(SharedCounters {
            relay_bytes: Counter::default(),
            relay_sessions: Counter::default(),
            holders_hits: Counter::default(),
            holders_misses: Counter::default(),
        })
    }

    #[test]
    fn series_are_prefixed_typed_and_counted() {
        let m = metrics();
        m.observe_request(
            "/api/v1/search",
            &axum::http::Method::GET,
            200,
            Duration::from_millis(3),
        );
        m.search("ok");
        m.ingested("list", 42);
        m.sample_process();
        let text = m.encode().expect("encodes");
        assert!(text.contains("# TYPE peerdex_http_requests_total counter"));
        assert!(text.contains(
            "peerdex_http_requests_total{route=\"/api/v1/search\",method=\"GET\",status=\"200\"} 1"
        ));
        assert!(text.contains("peerdex_searches_total{outcome=\"ok\"} 1"));
        assert!(text.contains("peerdex_ingest_entries_total{kind=\"list\"} 42"));
        assert!(text.contains("# TYPE process_resident_memory_bytes gauge"));
        assert!(text.contains("process_start_time_seconds "));
        assert!(!text.contains("# EOF"), "0.0.4 text, not OpenMetrics");
    }

    #[test]
    fn unusual_methods_share_one_label() {
        let m = axum::http::Method::from_bytes(b"BREW").expect("a valid token");
        assert_eq!(method_label(&m), "other");
    }
}
