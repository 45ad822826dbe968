use std::io::Cursor;

use async_compression::tokio::write::GzipEncoder;
use tokio::io::AsyncWriteExt;

use super::*;

fn csv_format(header: bool, columns: &[&str]) -> Format {
    let columns = columns.iter().map(|c| c.to_string()).collect();
    Format::Csv(CsvOptions { header, columns, ..CsvOptions::default() })
}

fn options(format: Format) -> FileOptions {
    FileOptions { format, compression: Compression::Auto, start_after_row: 0, max_row_bytes: 1 << 20 }
}

async fn open(bytes: impl Into<Vec<u8>>, options: FileOptions, key: &str) -> Result<FileReader, FileError> {
    FileReader::open(Cursor::new(bytes.into()), options, key, None).await
}

/// Every row until the end or the error that ended the file.
async fn drain(reader: &mut FileReader) -> (Vec<Row>, Option<FileError>) {
    let mut rows = Vec::new();
    loop {
        match reader.next_chunk(3, usize::MAX).await {
            Ok(Some(chunk)) => rows.extend(chunk.rows),
            Ok(None) => return (rows, None),
            Err(e) => return (rows, Some(e)),
        }
    }
}

async fn read(bytes: impl Into<Vec<u8>>, options: impl Into<FileOptions>) -> (Vec<Row>, Option<FileError>) {
    drain(&mut open(bytes, options.into(), "object").await.unwrap()).await
}

impl From<Format> for FileOptions {
    fn from(format: Format) -> Self {
        options(format)
    }
}

fn fields(line: u64, fields: &[Option<&str>]) -> Row {
    Row { line, item: Ok(Item::Fields(fields.iter().map(|f| f.map(str::to_owned)).collect())) }
}

fn json(line: u64, text: &str) -> Row {
    Row { line, item: Ok(Item::Json(text.as_bytes().to_vec())) }
}

fn failed(line: u64, error: RowError, raw: &[u8]) -> Row {
    Row { line, item: Err(BadRow { error, raw: raw.to_vec(), cut: false }) }
}

async fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzipEncoder::new(Vec::new());
    encoder.write_all(bytes).await.unwrap();
    encoder.shutdown().await.unwrap();
    encoder.into_inner()
}

#[tokio::test]
async fn csv_quoted_fields_keep_line_numbers() {
    let text = "id,text\n1,\"a, b\"\n2,\"say \"\"hi\"\"\"\n3,\"two\nlines\"\n4,after\n";
    let mut reader = open(text, options(csv_format(true, &[])), "object").await.unwrap();
    assert_eq!(reader.columns(), ["id", "text"]);
    let (rows, error) = drain(&mut reader).await;
    assert!(error.is_none());
    let expected = [
        fields(2, &[Some("1"), Some("a, b")]),
        fields(3, &[Some("2"), Some("say \"hi\"")]),
        fields(4, &[Some("3"), Some("two\nlines")]),
        fields(6, &[Some("4"), Some("after")]),
    ];
    assert_eq!(rows, expected);
    assert_eq!(reader.rows_read(), 4);
    assert_eq!(reader.bytes_read(), text.len() as u64);
}

#[tokio::test]
async fn csv_without_header_or_final_newline() {
    let (rows, error) = read("1,2\n3;x,4", csv_format(false, &["a", "b"])).await;
    assert!(error.is_none());
    assert_eq!(rows, [fields(1, &[Some("1"), Some("2")]), fields(2, &[Some("3;x"), Some("4")])]);
}

#[tokio::test]
async fn csv_delimiter_and_crlf() {
    let format = Format::Csv(CsvOptions { delimiter: b';', ..CsvOptions::default() });
    let (rows, error) = read("a;b\r\n1;2,5\r\n3;\"x\r\ny\"\r\n5;6", format).await;
    assert!(error.is_none());
    let expected = [
        fields(2, &[Some("1"), Some("2,5")]),
        fields(3, &[Some("3"), Some("x\r\ny")]),
        fields(5, &[Some("5"), Some("6")]),
    ];
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn csv_blank_lines_count() {
    let (rows, error) = read("\na\r\n\r\n1\n\n\n\"2\n\"\r\n\n3", csv_format(true, &[])).await;
    assert!(error.is_none());
    assert_eq!(rows, [fields(4, &[Some("1")]), fields(7, &[Some("2\n")]), fields(10, &[Some("3")])]);
}

#[tokio::test]
async fn rows_longer_than_the_limit_are_row_errors() {
    let long = "x".repeat(5000);
    let cases = [
        (csv_format(true, &[]), format!("a,b\n1,2\n{long},\"{long}\"\n3,4\n"), fields(4, &[Some("3"), Some("4")])),
        (csv_format(true, &[]), format!("a,b\n1,2\n{}\n3,4\n", ",".repeat(5000)), fields(4, &[Some("3"), Some("4")])),
        (Format::JsonLines, format!("1\n\"{long}\"\n3\n"), json(3, "3")),
        (Format::JsonArray, format!("[1, \"{long}\", 3]"), json(3, "3")),
    ];
    for (format, text, last) in cases {
        let (rows, error) = read(text.clone(), FileOptions { max_row_bytes: 4000, ..options(format) }).await;
        assert!(error.is_none());
        assert_eq!(rows.len(), 3);
        let bad = rows[1].item.as_ref().unwrap_err();
        assert_eq!((rows[1].line, &bad.error), (last.line - 1, &RowError::TooLong { max: 4000 }));
        let header: &[u8] = if text.starts_with("a,b") { b"a,b\n" } else { b"" };
        assert!(bad.cut && bad.raw.starts_with(header));
        assert_eq!(bad.raw.len(), header.len() + 4000, "the header and the row's first 4000 bytes");
        assert_eq!(rows[2], last);
    }
    let e = open(format!("{long}\n1\n"), FileOptions { max_row_bytes: 4000, ..options(csv_format(true, &[])) }, "o");
    assert_eq!(e.await.err().unwrap().to_string(), "the CSV header is longer than max_row_bytes");
}

#[tokio::test]
async fn csv_empty_fields_per_column() {
    let text = "a,b,c\n,,\"\"\n1,,x\n";
    let overrides = HashMap::from([("b".to_owned(), EmptyAs::EmptyString)]);
    let format = Format::Csv(CsvOptions { empty_overrides: overrides.clone(), ..CsvOptions::default() });
    let (rows, _) = read(text, format).await;
    assert_eq!(rows, [fields(2, &[None, Some(""), None]), fields(3, &[Some("1"), Some(""), Some("x")])]);

    let overrides = HashMap::from([("b".to_owned(), EmptyAs::Null)]);
    let format =
        Format::Csv(CsvOptions { empty: EmptyAs::EmptyString, empty_overrides: overrides, ..CsvOptions::default() });
    let (rows, _) = read(text, format).await;
    assert_eq!(rows[0], fields(2, &[Some(""), None, Some("")]));
}

#[tokio::test]
async fn csv_malformed_rows_do_not_stop_the_file() {
    let (rows, error) = read(b"a,b\n1,2\n3\n4,5,6\n\"\0\",\xff\n7,8\n", csv_format(true, &[])).await;
    assert!(error.is_none());
    let expected = [
        fields(2, &[Some("1"), Some("2")]),
        failed(3, RowError::FieldCount { expected: 2, found: 1 }, b"a,b\n3"),
        failed(4, RowError::FieldCount { expected: 2, found: 3 }, b"a,b\n4,5,6"),
        failed(5, RowError::FieldNotUtf8 { field: 2 }, b"a,b\n\"\0\",\xff"),
        fields(6, &[Some("7"), Some("8")]),
    ];
    assert_eq!(rows, expected);
    assert_eq!(rows[1].item.as_ref().unwrap_err().to_string(), "expected 2 fields, found 1");
}

#[tokio::test]
async fn a_bad_row_keeps_its_bytes_as_the_file_held_them() {
    let text = "1,\"a, \"\"b\"\"\"\r\n2,\"x\ny\",extra\r\n3,c";
    let (rows, error) = read(text, csv_format(false, &["n", "t"])).await;
    assert!(error.is_none());
    let bad = failed(2, RowError::FieldCount { expected: 2, found: 3 }, b"2,\"x\ny\",extra");
    assert_eq!(rows, [fields(1, &[Some("1"), Some("a, \"b\"")]), bad, fields(4, &[Some("3"), Some("c")])]);
    assert_eq!(
        format!("{:?}", rows[1].item),
        "Err(BadRow { error: FieldCount { expected: 2, found: 3 }, raw_bytes: 13, cut: false })"
    );
}

#[tokio::test]
async fn csv_header_with_byte_order_mark() {
    let reader = open("\u{feff}a,b\n1,2\n", options(csv_format(true, &[])), "object").await.unwrap();
    assert_eq!(reader.columns(), ["a", "b"]);
}

#[tokio::test]
async fn csv_option_errors() {
    let cases = [
        (csv_format(false, &[]), "a CSV without a header needs column names"),
        (csv_format(true, &["a"]), "a CSV with a header takes its column names from it"),
    ];
    for (format, expected) in cases {
        let e = open("a\n1\n", options(format), "object").await.err().unwrap();
        assert_eq!(e.to_string(), expected);
    }
    let overrides = HashMap::from([("typo".to_owned(), EmptyAs::Null)]);
    let format = Format::Csv(CsvOptions { empty_overrides: overrides, ..CsvOptions::default() });
    let e = open("a\n1\n", options(format), "object").await.err().unwrap();
    assert_eq!(e.to_string(), "empty_overrides names `typo`, which is not a column of the file");
    let e = open(b"\xff\n1\n", options(csv_format(true, &[])), "object").await.err().unwrap();
    assert_eq!(e.to_string(), "the CSV header is not valid UTF-8");
}

#[tokio::test]
async fn empty_files_have_no_rows() {
    for format in [csv_format(true, &[]), csv_format(false, &["a"]), Format::JsonLines, Format::JsonArray] {
        let mut reader = open("", options(format.clone()), "object").await.unwrap();
        assert!(reader.columns().len() <= 1);
        let (rows, error) = drain(&mut reader).await;
        assert!(rows.is_empty() && error.is_none(), "{format:?}");
    }
    for format in [Format::JsonLines, Format::JsonArray] {
        let (rows, error) = read(" \n\r\n", format).await;
        assert!(rows.is_empty() && error.is_none());
    }
}

#[tokio::test]
async fn gzip_single_and_multi_member() {
    let one = gzip(b"a,b\n1,2\n").await;
    let mut two = gzip(b"a,b\n1,").await;
    two.extend(gzip(b"2\n3,4\n").await);
    for (bytes, count) in [(one, 1), (two, 2)] {
        let compressed = bytes.len() as u64;
        let gzip_options = FileOptions { compression: Compression::Gzip, ..options(csv_format(true, &[])) };
        let mut reader = open(bytes, gzip_options, "object").await.unwrap();
        let (rows, error) = drain(&mut reader).await;
        assert!(error.is_none());
        assert_eq!(rows.len(), count);
        assert_eq!(rows[0], fields(2, &[Some("1"), Some("2")]));
        assert_eq!(reader.bytes_read(), compressed);
    }
}

#[tokio::test]
async fn auto_compression_by_key_or_encoding() {
    assert_eq!(Compression::detect("data/x.csv.gz", None), Compression::Gzip);
    assert_eq!(Compression::detect("data/X.GZ", None), Compression::Gzip);
    assert_eq!(Compression::detect("data/x.csv", Some("gzip")), Compression::Gzip);
    assert_eq!(Compression::detect("data/x.csv", Some("identity")), Compression::None);
    assert_eq!(Compression::detect("data/gz", None), Compression::None);

    let bytes = gzip(b"{\"a\":1}\n").await;
    let by_key = open(bytes.clone(), options(Format::JsonLines), "x.jsonl.gz").await.unwrap();
    let by_encoding =
        FileReader::open(Cursor::new(bytes), options(Format::JsonLines), "x.jsonl", Some("gzip")).await.unwrap();
    for mut reader in [by_key, by_encoding] {
        let (rows, error) = drain(&mut reader).await;
        assert!(error.is_none());
        assert_eq!(rows, [json(1, "{\"a\":1}")]);
    }
}

#[tokio::test]
async fn corrupt_gzip_ends_the_file() {
    let mut bytes = gzip(&b"{\"a\":1}\n".repeat(1000)).await;
    let middle = bytes.len() / 2;
    bytes[middle..].fill(0x55);
    let mut reader = open(bytes, options(Format::JsonLines), "x.gz").await.unwrap();
    let error = drain(&mut reader).await.1.unwrap();
    assert!(matches!(&error, FileError::Gzip(_)), "{error}");
    assert!(!error.is_retryable());

    let truncated = gzip(b"{\"a\":1}\n").await;
    let mut reader = open(&truncated[..truncated.len() - 4], options(Format::JsonLines), "x.gz").await.unwrap();
    assert!(matches!(drain(&mut reader).await, (_, Some(FileError::Gzip(_)))));
}

/// Gives its bytes, then fails.
struct Failing(Vec<u8>);

impl AsyncRead for Failing {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.0.is_empty() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset")));
        }
        let n = self.0.len().min(buf.remaining());
        buf.put_slice(&self.0[..n]);
        self.0.drain(..n);
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn input_errors_are_retryable() {
    let text = b"a\n1\n2\n";
    let compressed = gzip(text).await;
    for (bytes, key) in [(text.to_vec(), "x.csv"), (compressed[..compressed.len() - 8].to_vec(), "x.csv.gz")] {
        // The error may come while the header is read, depending on the decoder.
        let error = match FileReader::open(Failing(bytes), options(csv_format(true, &[])), key, None).await {
            Ok(mut reader) => drain(&mut reader).await.1.unwrap(),
            Err(e) => e,
        };
        assert!(error.is_retryable(), "{error}");
        assert_eq!(error.to_string(), "reading the object failed: connection reset");
    }
}

#[tokio::test]
async fn json_lines_are_split_not_parsed() {
    let (rows, error) = read(b"{\"a\":1}\n\n{bad\n  [1, 2] \r\n\"\xff\"\n3", Format::JsonLines).await;
    assert!(error.is_none());
    // Lines are split, not parsed: their consumer parses each (once) and
    // names what is wrong.
    let not_utf8 = Row { line: 5, item: Ok(Item::Json(b"\"\xff\"".to_vec())) };
    let expected = [json(1, "{\"a\":1}"), json(3, "{bad"), json(4, "[1, 2]"), not_utf8, json(6, "3")];
    assert_eq!(rows, expected);
}

#[tokio::test]
async fn json_array_streams_elements() {
    let (rows, error) = read(" [{\"a\": [1, 2]}, 2,\n \"x\", null]\n", Format::JsonArray).await;
    assert!(error.is_none());
    assert_eq!(rows, [json(1, "{\"a\": [1, 2]}"), json(2, "2"), json(3, "\"x\""), json(4, "null")]);
}

#[tokio::test]
async fn broken_json_array_ends_the_file_after_good_elements() {
    let (rows, error) = read("[1, {\"a\": 2}, {\"b\":", Format::JsonArray).await;
    assert_eq!(rows, [json(1, "1"), json(2, "{\"a\": 2}")]);
    let error = error.unwrap();
    assert!(matches!(error, FileError::JsonArray { element: 3, .. }), "{error}");
    assert_eq!(error.to_string(), "the JSON array breaks at element 3: EOF while parsing a value");

    let (rows, error) = read("[1] [2]", Format::JsonArray).await;
    assert_eq!(
        (rows.len(), error.unwrap().to_string()),
        (1, "the JSON array breaks at element 2: trailing characters".into())
    );
}

#[tokio::test]
async fn json_document_that_is_not_an_array() {
    for text in ["{\"secret\": [1]}", "\"secret\"", "7"] {
        let (rows, error) = read(text, Format::JsonArray).await;
        assert!(rows.is_empty());
        assert!(matches!(error, Some(FileError::NotJsonArray)), "{error:?}");
    }
}

#[tokio::test]
async fn start_after_row_skips_rows() {
    let cases = [
        (
            csv_format(true, &[]),
            "a\n1\n\"2\n\"\nbad,row\n4\n",
            vec![failed(5, RowError::FieldCount { expected: 1, found: 2 }, b"a\nbad,row"), fields(6, &[Some("4")])],
        ),
        (Format::JsonLines, "1\n\n2\n{\n4\n", vec![json(5, "4")]),
        (Format::JsonArray, "[1, [2], {\"3\": 3}, 4]", vec![json(4, "4")]),
    ];
    for (format, text, expected) in cases {
        let skip = 4 - expected.len() as u64;
        let mut reader = open(text, FileOptions { start_after_row: skip, ..options(format) }, "object").await.unwrap();
        let chunk = reader.next_chunk(10, usize::MAX).await.unwrap().unwrap();
        assert_eq!((chunk.first_row, chunk.rows), (skip, expected));
        assert_eq!(reader.rows_read(), 4);
        assert!(reader.next_chunk(10, usize::MAX).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn chunks_respect_max_rows_and_max_bytes() {
    let mut reader = open("1\n22\n333\n4444\n55555\n", options(Format::JsonLines), "object").await.unwrap();
    let mut sizes = Vec::new();
    while let Some(chunk) = reader.next_chunk(2, 6).await.unwrap() {
        sizes.push((chunk.first_row, chunk.rows.len(), chunk.bytes));
    }
    // A row larger than max_bytes comes alone.
    assert_eq!(sizes, [(0, 2, 3), (2, 1, 3), (3, 1, 4), (4, 1, 5)]);
}

/// Writes `rows` generated lines through gzip into a pipe far smaller than
/// the output, so the reader must stream.
fn generate(rows: u64, line: fn(u64) -> String) -> tokio::io::DuplexStream {
    let (writer, reader) = tokio::io::duplex(16 * 1024);
    tokio::spawn(async move {
        let mut gzip = GzipEncoder::new(writer);
        for i in 0..rows {
            gzip.write_all(line(i).as_bytes()).await.unwrap();
        }
        gzip.shutdown().await.unwrap();
    });
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_gzipped_files_stream() {
    const ROWS: u64 = 200_000;
    let csv = generate(ROWS + 1, |i| if i == 0 { "id,name\n".into() } else { format!("{i},\"name {i}\"\n") });
    let jsonl = generate(ROWS, |i| format!("{{\"id\":{i},\"name\":\"name {i}\"}}\n"));
    for (input, format) in [(csv, csv_format(true, &[])), (jsonl, Format::JsonLines)] {
        let mut reader = FileReader::open(input, options(format), "big.gz", None).await.unwrap();
        let (mut count, mut last_line) = (0, 0);
        while let Some(chunk) = reader.next_chunk(5000, 1 << 20).await.unwrap() {
            assert!(chunk.rows.iter().all(|r| r.item.is_ok()));
            count += chunk.rows.len() as u64;
            last_line = chunk.rows.last().unwrap().line;
        }
        assert_eq!((count, reader.rows_read()), (ROWS, ROWS));
        assert!(last_line >= ROWS);
        assert!(reader.bytes_read() > 0);
    }
}

#[tokio::test]
async fn a_huge_json_array_element_is_cut_off_while_it_is_read() {
    // A small gzip object inflating to one enormous element: reading stops
    // at a bound, not at the end of the element.
    let huge = format!("[1, \"{}\", 3]", "x".repeat(50 << 20));
    let object = gzip(huge.as_bytes()).await;
    assert!(object.len() < 1 << 20, "{} bytes compressed", object.len());
    let options = FileOptions { max_row_bytes: 4000, ..options(Format::JsonArray) };
    let mut reader = FileReader::open(Cursor::new(object), options, "huge.json.gz", None).await.unwrap();
    let (rows, error) = drain(&mut reader).await;
    assert_eq!(rows, [json(1, "1")]);
    let error = error.expect("the array breaks at the element");
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        "the JSON array breaks at element 2: the element is longer than max_row_bytes (4000); the rest of the array is not read"
    );
}
