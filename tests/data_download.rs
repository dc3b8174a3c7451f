//! MedMNIST downloads against a local HTTP server on 127.0.0.1 that the test starts.

use cxr::data::download::{md5_file, medmnist, DownloadOptions};
use cxr::data::{Dataset, MedMnist, MedMnistOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cxr-datadl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small valid ChestMNIST-layout npz.
fn small_npz() -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    for (split, n) in [("train", 4usize), ("val", 2), ("test", 2)] {
        let mut imgs = cxr::data::npy::write_header("|u1", &[n, 28, 28]);
        imgs.extend((0..n * 784).map(|i| (i % 251) as u8));
        let mut labels = cxr::data::npy::write_header("|u1", &[n, 14]);
        labels.extend((0..n * 14).map(|i| (i % 5 == 0) as u8));
        z.start_file(format!("{split}_images.npy"), opts).unwrap();
        z.write_all(&imgs).unwrap();
        z.start_file(format!("{split}_labels.npy"), opts).unwrap();
        z.write_all(&labels).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// Serves `body` for `/<name>.npz` and 404 otherwise, for `requests` connections.
fn serve(name: &'static str, body: Vec<u8>, requests: usize) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut paths = Vec::new();
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let ok = path.starts_with(&format!("/{name}.npz"));
            let (status, payload): (&str, &[u8]) = if ok { ("200 OK", &body) } else { ("404 Not Found", b"no") };
            write!(stream, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", payload.len())
                .unwrap();
            stream.write_all(payload).unwrap();
            paths.push(path);
        }
        paths
    });
    (base, handle)
}

#[test]
fn download_success_then_cached() {
    let dir = temp_dir("ok");
    let body = small_npz();
    std::fs::write(dir.join("reference.bin"), &body).unwrap();
    let md5 = md5_file(&dir.join("reference.bin")).unwrap();
    let (base, server) = serve("tinymnist", body.clone(), 1);
    let opts = DownloadOptions { base_url: Some(base), dir: Some(dir.join("cache")), md5: Some(md5) };
    let path = medmnist("tinymnist", &opts).unwrap();
    assert_eq!(path, dir.join("cache/tinymnist.npz"));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(server.join().unwrap(), vec!["/tinymnist.npz?download=1".to_string()]);
    // Present: no second request (the server is gone; a request would fail).
    assert_eq!(medmnist("tinymnist", &opts).unwrap(), path);
    let [tr, va, te] = MedMnist::open_splits(&path, &MedMnistOptions::default()).unwrap();
    assert_eq!((tr.len(), va.len(), te.len()), (4, 2, 2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn download_md5_mismatch_is_discarded() {
    let dir = temp_dir("md5");
    let (base, server) = serve("tinymnist", small_npz(), 1);
    let opts = DownloadOptions {
        base_url: Some(base),
        dir: Some(dir.clone()),
        md5: Some("00000000000000000000000000000000".into()),
    };
    let err = medmnist("tinymnist", &opts).unwrap_err().to_string();
    assert!(err.contains("MD5 mismatch") && err.contains("expected 00000000000000000000000000000000"), "{err}");
    server.join().unwrap();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no file or partial download left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn download_errors_offline_and_unknown() {
    let dir = temp_dir("offline");
    // A port nobody listens on: bind, learn the port, close.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let opts =
        DownloadOptions { base_url: Some(format!("http://127.0.0.1:{port}")), dir: Some(dir.clone()), md5: None };
    let err = medmnist("chestmnist", &opts).unwrap_err().to_string();
    let target = dir.join("chestmnist.npz");
    assert!(err.contains("by hand") && err.contains(&target.display().to_string()), "{err}");
    assert!(err.contains("02c8a6516a18b556561a56cbdd36c4a8"), "{err}");
    assert!(!target.exists());
    // 404 is an error too.
    let (base, server) = serve("other", Vec::new(), 1);
    let err = medmnist("chestmnist_64", &DownloadOptions { base_url: Some(base), dir: Some(dir.clone()), md5: None })
        .unwrap_err()
        .to_string();
    assert!(err.contains("404") && err.contains("by hand"), "{err}");
    server.join().unwrap();
    let err = medmnist("nosuchmnist", &opts).unwrap_err().to_string();
    assert!(err.contains("unknown MedMNIST file") && err.contains("chestmnist_224"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
