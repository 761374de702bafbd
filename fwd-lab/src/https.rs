//! An HTTPS server on 127.0.0.1 for tests of feeds: a certificate of a CA made for the run
//! (rcgen), rustls, one connection at a time, replies set by path; `If-None-Match` that
//! matches a reply's ETag gets a 304.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    sync::{Arc, Mutex},
};

/// What the server answers for a path: status, body, ETag.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    etag: Option<String>,
}

/// Requests seen: (path, If-None-Match).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// An HTTPS server on 127.0.0.1 with a certificate of a test CA; replies by path.
pub struct Server {
    pub port: u16,
    /// The CA to trust (PEM).
    pub ca_pem: String,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    seen: Seen,
}

impl Server {
    pub fn start() -> Server {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let replies: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let seen: Seen = Arc::default();
        let (r, s) = (replies.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut reader = BufReader::new(&mut tls);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let path = request_line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .to_string();
                let mut if_none_match = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("if-none-match")
                    {
                        if_none_match = Some(v.trim().to_string());
                    }
                }
                drop(reader);
                s.lock()
                    .unwrap()
                    .push((path.clone(), if_none_match.clone()));
                let reply = r.lock().unwrap().get(&path).cloned().unwrap_or(Reply {
                    status: 404,
                    body: b"not here".to_vec(),
                    etag: None,
                });
                let not_modified =
                    reply.etag.is_some() && reply.etag == if_none_match && reply.status == 200;
                let (status, body): (u16, &[u8]) = if not_modified {
                    (304, b"")
                } else {
                    (reply.status, &reply.body)
                };
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                if let Some(e) = &reply.etag {
                    head.push_str(&format!("ETag: {e}\r\n"));
                }
                head.push_str("\r\n");
                let _ = tls.write_all(head.as_bytes());
                let _ = tls.write_all(body);
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        Server {
            port,
            ca_pem: ca.pem(),
            replies,
            seen,
        }
    }

    /// Answers `path` with `status`, `body` and, if given, an ETag.
    pub fn serve(&self, path: &str, status: u16, body: &str, etag: Option<&str>) {
        self.replies.lock().unwrap().insert(
            path.to_string(),
            Reply {
                status,
                body: body.as_bytes().to_vec(),
                etag: etag.map(str::to_string),
            },
        );
    }

    /// `https://127.0.0.1:PORT/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The `If-None-Match` of the last request, if it had one.
    pub fn last_if_none_match(&self) -> Option<String> {
        self.seen
            .lock()
            .unwrap()
            .last()
            .and_then(|(_, e)| e.clone())
    }
}
