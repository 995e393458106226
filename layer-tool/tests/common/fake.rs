//! A registry that lies, for the pull's defences: canned answers per path (test code, a
//! minimal HTTP/1.1 responder on 127.0.0.1), and the paths asked for, recorded.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn ok(body: Vec<u8>, content_type: &str) -> Answer {
        Answer {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Answer {
        self.headers.push((k.into(), v.into()));
        self
    }
}

pub struct FakeRegistry {
    pub port: u16,
    routes: Arc<Mutex<HashMap<String, Answer>>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl FakeRegistry {
    pub fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        routes.lock().unwrap().insert(
            "/v2/".into(),
            Answer::ok(b"{}".to_vec(), "application/json"),
        );
        let (r, a) = (routes.clone(), asked.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (r, a) = (r.clone(), a.clone());
                std::thread::spawn(move || serve(conn, &r, &a));
            }
        });
        FakeRegistry {
            port,
            routes,
            asked,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn route(&self, path: &str, answer: Answer) {
        self.routes.lock().unwrap().insert(path.into(), answer);
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

fn serve(
    conn: std::net::TcpStream,
    routes: &Mutex<HashMap<String, Answer>>,
    asked: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split(' ');
        let method = words.next().unwrap_or("").to_string();
        let path = words.next().unwrap_or("").to_string();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim_end().is_empty() {
                break;
            }
        }
        asked.lock().unwrap().push(format!("{method} {path}"));
        let answer = routes
            .lock()
            .unwrap()
            .get(&path)
            .cloned()
            .unwrap_or(Answer {
                status: 404,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#.to_vec(),
            });
        let mut head = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            answer.status,
            answer.body.len()
        );
        for (k, v) in &answer.headers {
            head += &format!("{k}: {v}\r\n");
        }
        head += "\r\n";
        let body: &[u8] = if method == "HEAD" { &[] } else { &answer.body };
        if conn
            .write_all(head.as_bytes())
            .and_then(|()| conn.write_all(body))
            .is_err()
        {
            return;
        }
    }
}
