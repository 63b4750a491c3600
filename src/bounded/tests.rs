use super::*;

const LIMIT: Limit = Limit {
    bytes: 1024,
    time: Duration::from_secs(5),
};

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

#[test]
fn only_regular_files_of_bounded_size_are_read_and_errors_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "abc").unwrap();
    assert_eq!(read_file("token file", &file, LIMIT).unwrap(), b"abc");

    // A symlink to a regular file is followed.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    assert_eq!(read_file("token file", &link, LIMIT).unwrap(), b"abc");

    let missing = dir.path().join("missing");
    let e = read_file("token file", &missing, LIMIT).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(
        e.to_string(),
        format!("cannot open token file {}", missing.display())
    );

    let e = read_file("kubeconfig", dir.path(), LIMIT).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "kubeconfig {} is a directory, not a regular file",
            dir.path().display()
        )
    );
    let e = read_file("kubeconfig", Path::new("/dev/null"), LIMIT).unwrap_err();
    assert!(e.to_string().contains("is a character device"), "{e}");

    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 1024]).unwrap();
    assert_eq!(read_file("token file", &big, LIMIT).unwrap().len(), 1024);
    std::fs::write(&big, vec![b'x'; 1025]).unwrap();
    let e = read_file("token file", &big, LIMIT).unwrap_err();
    assert!(matches!(e, ReadError::TooLarge { limit: 1024, .. }), "{e}");
    assert!(e.to_string().contains(&big.display().to_string()), "{e}");
    assert_eq!(e.path(), big);
}

/// A FIFO with no writer, and one whose writer never stops, never hang a read; `/dev/zero`
/// never grows the process.
#[test]
fn a_fifo_and_dev_zero_neither_hang_nor_grow() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let e = read_file("token file", &fifo, LIMIT).unwrap_err();
    assert!(
        matches!(
            e,
            ReadError::NotRegular {
                kind: "is a FIFO",
                ..
            }
        ),
        "{e}"
    );

    // With a writer holding it open (the open does not wait, the read would): refused too.
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || std::fs::OpenOptions::new().write(true).open(&fifo)
    });
    let _reader = std::fs::File::open(&fifo).unwrap();
    let _writer = writer.join().unwrap().unwrap();
    let e = read_file("token file", &fifo, LIMIT).unwrap_err();
    assert!(matches!(e, ReadError::NotRegular { .. }), "{e}");

    for dev in ["/dev/zero", "/dev/urandom"] {
        let e = read_file("client certificate", Path::new(dev), LIMIT).unwrap_err();
        assert!(e.to_string().contains("is a character device"), "{e}");
    }
}

#[tokio::test]
async fn the_async_read_is_the_same_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.crt");
    std::fs::write(&file, "pem").unwrap();
    assert_eq!(
        read_file_async("certificate authority", &file, LIMIT)
            .await
            .unwrap(),
        b"pem"
    );
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let e = read_file_async("certificate authority", &fifo, LIMIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is a FIFO"), "{e}");
}

#[test]
fn lines_are_bounded_however_long_they_go_on() {
    let mut lines = Lines::new(8);
    assert_eq!(lines.push(b"ab").unwrap(), Vec::<Vec<u8>>::new());
    assert_eq!(
        lines.push(b"c\nd\n\nef").unwrap(),
        vec![b"abc".to_vec(), b"d".to_vec(), Vec::new()]
    );
    assert_eq!(
        lines.push(b"12345678\n").unwrap_err(),
        LineTooLong { limit: 8 }
    );
    // A line of exactly the limit is fine.
    let mut lines = Lines::new(8);
    assert_eq!(
        lines.push(b"12345678\n").unwrap(),
        vec![b"12345678".to_vec()]
    );
    // An endless line: an error as soon as it passes the limit, whatever the chunks.
    let mut lines = Lines::new(1024);
    let chunk = vec![b'x'; 100];
    let mut pushed = 0;
    let e = loop {
        match lines.push(&chunk) {
            Ok(l) => assert!(l.is_empty()),
            Err(e) => break e,
        }
        pushed += chunk.len();
        assert!(pushed <= 1024, "buffered past the limit");
    };
    assert_eq!(e.to_string(), "a line longer than 1024 bytes");
    assert_eq!(Lines::new(4).finish(), None);
    let mut tail = Lines::new(4);
    tail.push(b"a\nbc").unwrap();
    assert_eq!(tail.finish(), Some(b"bc".to_vec()));
}

#[tokio::test]
async fn a_pipe_is_read_capped() {
    let data = vec![7u8; 300_000];
    let kept = read_capped(&data[..], 1000, false).await.unwrap();
    assert_eq!((kept.head.len(), kept.total), (1000, 300_000));
    assert!(kept.truncated());
    let stopped = read_capped(&data[..], 1000, true).await.unwrap();
    assert!(stopped.truncated() && stopped.total < 300_000, "{stopped}");
    let small = read_capped(&b"ok"[..], 1000, true).await.unwrap();
    assert_eq!((small.head, small.total), (b"ok".to_vec(), 2));
    assert!(!read_capped(&b"ok"[..], 2, true).await.unwrap().truncated());
}
