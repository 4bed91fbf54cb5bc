//! The command line: output format and order, the late side output, and every bad input — each
//! must exit non-zero with a message that names the problem and leave no output file behind.

mod common;

use polars::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fenestra"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run fenestra")
}

/// `fenestra run --input INPUT --output OUTPUT --window WINDOW`, then `extra`.
fn run_job(input: &Path, output: &Path, window: &str, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--input", s(input), "--output", s(output), "--window", window];
    args.extend_from_slice(extra);
    run(&args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn write_csv(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn names(df: &DataFrame) -> Vec<&str> {
    df.get_column_names().into_iter().map(|c| c.as_str()).collect()
}

fn read(path: &Path) -> DataFrame {
    fenestra::io::read_frame(path).unwrap()
}

fn generate(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = p(dir, name);
    let mut args = vec!["gen", "--events", "20000", "--keys", "50", "--output", s(&out)];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "gen failed: {}", stderr(&o));
    out
}

#[test]
fn gen_then_run_gives_the_documented_columns_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(
        dir.path(),
        "events.parquet",
        &["--late-fraction", "0.01", "--zipf", "1.1"],
    );
    let df = read(&input);
    assert_eq!(names(&df), vec!["ts", "key", "value"]);
    assert_eq!(df.height(), 20_000);
    let out = p(dir.path(), "out.parquet");
    let late = p(dir.path(), "late.csv");
    let o = run_job(
        &input,
        &out,
        "tumble:1s",
        &["--backend", "cpu", "--late-output", s(&late)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("events read 20000"), "{err}");
    assert!(
        err.contains("late ") && err.contains("windows emitted") && err.contains("events/s"),
        "{err}"
    );
    let res = read(&out);
    assert_eq!(
        names(&res),
        vec![
            "key",
            "window_start",
            "window_end",
            "revision",
            "count",
            "sum_value",
            "min_value",
            "max_value",
            "mean_value",
            "std_value"
        ]
    );
    // the key keeps its input type
    assert_eq!(res.column("key").unwrap().dtype(), &DataType::UInt32);
    // rows sorted by (window_start, key)
    let ws: Vec<i64> = res
        .column("window_start")
        .unwrap()
        .i64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    let ks: Vec<u32> = res.column("key").unwrap().u32().unwrap().into_no_null_iter().collect();
    for i in 1..ws.len() {
        assert!((ws[i - 1], ks[i - 1]) < (ws[i], ks[i]), "row order at {i}");
    }
    let counted: u64 = res.column("count").unwrap().u64().unwrap().sum().unwrap();
    let late_df = read(&late);
    assert_eq!(names(&late_df), vec!["ts", "key", "value"]);
    assert!(late_df.height() > 0);
    assert_eq!(counted as usize + late_df.height(), 20_000, "on-time + late = input");
}

#[test]
fn a_wide_parquet_file_gives_the_same_windows_and_late_rows_keep_every_column() {
    // extra columns the job does not read (a string, a float with nulls, a bool), between and
    // around the ones it does: decoded only when late rows go out whole
    let dir = tempfile::tempdir().unwrap();
    let events = read(&generate(dir.path(), "e.parquet", &["--late-fraction", "0.02"]));
    let n = events.height();
    let label: Vec<String> = (0..n).map(|i| format!("row{i}")).collect();
    let noisy: Vec<Option<f64>> = (0..n).map(|i| (i % 3 != 0).then_some(i as f64)).collect();
    let flag: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
    let mut wide = DataFrame::new_infer_height(vec![
        Column::new("label".into(), label),
        events.column("ts").unwrap().clone(),
        Column::new("noisy".into(), noisy),
        events.column("key").unwrap().clone(),
        events.column("value").unwrap().clone(),
        Column::new("flag".into(), flag),
    ])
    .unwrap();
    let input = p(dir.path(), "wide.parquet");
    fenestra::io::write_frame(&mut wide, &input).unwrap();
    let narrow = p(dir.path(), "narrow.parquet");
    let mut plain = events.clone();
    fenestra::io::write_frame(&mut plain, &narrow).unwrap();
    let (a, b, c) = (
        p(dir.path(), "a.parquet"),
        p(dir.path(), "b.parquet"),
        p(dir.path(), "c.parquet"),
    );
    let late = p(dir.path(), "late.parquet");
    for (inp, out, extra) in [
        (&narrow, &a, vec![]),
        (&input, &b, vec![]),
        (&input, &c, vec!["--late-output", s(&late)]),
    ] {
        let mut args = vec!["--backend", "cpu"];
        args.extend(extra);
        let o = run_job(inp, out, "hop:2s:1s", &args);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let want = read(&a);
    assert!(want.height() > 0);
    assert!(read(&b).equals(&want), "a projected read changed the windows");
    assert!(read(&c).equals(&want));
    let late_df = read(&late);
    assert_eq!(names(&late_df), names(&wide), "late rows keep every input column");
    assert!(late_df.height() > 0);
    // each late row is its input row, the unread columns included
    let joined = late_df
        .join(&wide, ["label"], ["label"], JoinArgs::new(JoinType::Inner), None)
        .unwrap();
    assert_eq!(joined.height(), late_df.height());
    assert!(
        joined
            .column("noisy")
            .unwrap()
            .equals_missing(joined.column("noisy_right").unwrap())
    );
    // a column the file lacks: named, with every column the file has (not only the read ones)
    let o = run_job(
        &input,
        &p(dir.path(), "d.parquet"),
        "tumble:1s",
        &["--value-cols", "value,nope"],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("'nope'") && err.contains("flag") && err.contains("label"),
        "{err}"
    );
}

#[test]
fn string_keys_stay_strings_null_key_is_a_group_and_no_key_has_no_column() {
    let dir = tempfile::tempdir().unwrap();
    let input = p(dir.path(), "in.csv");
    write_csv(
        &input,
        "ts,user,v\n1000,bob,1.5\n1200,alice,2\n1300,,4\n1400,bob,\n2500,alice,3\n",
    );
    let out = p(dir.path(), "out.csv");
    let o = run_job(
        &input,
        &out,
        "tumble:1s",
        &[
            "--key-col",
            "user",
            "--value-cols",
            "v",
            "--watermark-delay",
            "0ms",
            "--aggs",
            "count,sum",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let res = read(&out);
    assert_eq!(
        names(&res),
        vec!["key", "window_start", "window_end", "revision", "count", "sum_v"]
    );
    assert_eq!(res.column("key").unwrap().dtype(), &DataType::String);
    let keys: Vec<Option<&str>> = res.column("key").unwrap().str().unwrap().iter().collect();
    assert_eq!(keys, vec![Some("alice"), Some("bob"), None, Some("alice")]);
    let counts: Vec<u64> = res
        .column("count")
        .unwrap()
        .cast(&DataType::UInt64)
        .unwrap()
        .u64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(counts, vec![1, 2, 1, 1]);
    let sums: Vec<Option<f64>> = res.column("sum_v").unwrap().f64().unwrap().iter().collect();
    assert_eq!(sums, vec![Some(2.0), Some(1.5), Some(4.0), Some(3.0)]);

    let out2 = p(dir.path(), "out2.parquet");
    let o = run_job(
        &input,
        &out2,
        "session:500ms",
        &["--no-key", "--value-cols", "v", "--watermark-delay", "0ms"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let res = read(&out2);
    assert_eq!(names(&res)[0], "window_start");
    assert_eq!(res.height(), 2);
}

fn expect_failure(args: &[&str], needle: &str, outputs: &[&Path]) {
    let o = run(args);
    assert!(!o.status.success(), "expected failure for {args:?}");
    let err = stderr(&o);
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "message for {args:?} should mention '{needle}': {err}"
    );
    for out in outputs {
        assert!(!out.exists(), "{} must not exist after a failure", out.display());
        let dir = out.parent().unwrap();
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !name.contains("fenestra") || !name.ends_with(".tmp"),
                "temporary file left behind: {name}"
            );
        }
    }
}

#[test]
fn bad_inputs_fail_clearly_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = p(d, "good.csv");
    write_csv(&good, "ts,key,value\n1000,1,1.0\n2000,2,2.0\n");
    let out = p(d, "out.parquet");
    let o = s(&out);
    let base = |input: &Path, window: &str| -> Vec<String> {
        vec![
            "run".into(),
            "--input".into(),
            s(input).into(),
            "--output".into(),
            o.into(),
            "--window".into(),
            window.into(),
        ]
    };
    let call = |v: Vec<String>, extra: &[&str], needle: &str| {
        let mut args: Vec<&str> = v.iter().map(|x| x.as_str()).collect();
        args.extend_from_slice(extra);
        expect_failure(&args, needle, &[&out]);
    };

    // missing column
    call(
        base(&good, "tumble:1s"),
        &["--value-cols", "price"],
        "column 'price' not found",
    );
    call(
        base(&good, "tumble:1s"),
        &["--time-col", "event_time"],
        "column 'event_time' not found",
    );
    // wrong type
    let strval = p(d, "strval.csv");
    write_csv(&strval, "ts,key,value\n1000,1,abc\n2000,2,def\n");
    call(base(&strval, "tumble:1s"), &[], "column 'value' has type");
    let floatkey = p(d, "floatkey.csv");
    write_csv(&floatkey, "ts,key,value\n1000,1.5,1\n2000,2.5,2\n");
    call(base(&floatkey, "tumble:1s"), &[], "column 'key' has type");
    // null and unparseable timestamps
    let nullts = p(d, "nullts.csv");
    write_csv(&nullts, "ts,key,value\n1000,1,1\n,2,2\n3000,3,3\n");
    call(base(&nullts, "tumble:1s"), &[], "null timestamp");
    let nants = p(d, "nants.csv");
    write_csv(&nants, "ts,key,value\n1000.0,1,1\nNaN,2,2\n");
    call(base(&nants, "tumble:1s"), &[], "NaN timestamp");
    let strts = p(d, "strts.csv");
    write_csv(&strts, "ts,key,value\nnoon,1,1\nlater,2,2\n");
    call(base(&strts, "tumble:1s"), &[], "column 'ts' has type");
    let farts = p(d, "farts.csv");
    write_csv(&farts, "ts,key,value\n1000,1,1\n9223372036854775807,2,2\n");
    call(base(&farts, "tumble:1s"), &[], "outside the supported range");
    // invalid window specs and durations
    call(base(&good, "tumble:0s"), &[], "invalid window spec");
    call(base(&good, "hop:1s:5s"), &[], "larger than size");
    call(base(&good, "sliding-ish:1s"), &[], "unknown window kind");
    call(
        base(&good, "tumble:1s"),
        &["--watermark-delay", "5 parsecs"],
        "invalid duration",
    );
    call(base(&good, "tumble:1s"), &["--allowed-lateness", "10"], "has no unit");
    call(
        base(&good, "tumble:1s"),
        &["--aggs", "count,median"],
        "invalid aggregate 'median'",
    );
    // unreadable, truncated, empty, missing, unsupported files
    let garbage = p(d, "garbage.parquet");
    std::fs::write(&garbage, b"this is not parquet at all, just bytes").unwrap();
    call(base(&garbage, "tumble:1s"), &[], "cannot read");
    let full = p(d, "full.parquet");
    let o2 = run(&["gen", "--events", "5000", "--output", s(&full)]);
    assert!(o2.status.success());
    let bytes = std::fs::read(&full).unwrap();
    let truncated = p(d, "truncated.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    call(base(&truncated, "tumble:1s"), &[], "cannot read");
    let empty = p(d, "empty.csv");
    std::fs::write(&empty, b"").unwrap();
    call(base(&empty, "tumble:1s"), &[], "empty input");
    let header_only = p(d, "header.csv");
    write_csv(&header_only, "ts,key,value\n");
    call(base(&header_only, "tumble:1s"), &[], "empty input");
    call(base(&p(d, "nope.csv"), "tumble:1s"), &[], "cannot read");
    let txt = p(d, "events.txt");
    write_csv(&txt, "ts,key,value\n1,1,1\n");
    call(base(&txt, "tumble:1s"), &[], "unsupported file type");
    // an output with an unsupported extension is refused before any work
    expect_failure(
        &[
            "run",
            "--input",
            s(&good),
            "--output",
            s(&p(d, "out.json")),
            "--window",
            "tumble:1s",
        ],
        "unsupported file type",
        &[&p(d, "out.json")],
    );
    // the GPU backend without an adapter names what it looked for (or works where one exists)
    let g = run(&[
        "run",
        "--input",
        s(&good),
        "--output",
        s(&p(d, "gpu.csv")),
        "--window",
        "tumble:1s",
        "--backend",
        "gpu",
    ]);
    if !g.status.success() {
        assert!(stderr(&g).contains("no GPU adapter"), "{}", stderr(&g));
        assert!(!p(d, "gpu.csv").exists());
    }
}

#[test]
fn bench_reports_json() {
    let o = run(&[
        "bench",
        "--events",
        "200000",
        "--keys",
        "100",
        "--backend",
        "cpu",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON object");
    for k in ["backend", "events", "seconds", "events_per_sec", "windows"] {
        assert!(v.get(k).is_some(), "missing {k} in {text}");
    }
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["events"], 200_000);
    // 200k events at 10 per ms = 20 s of event time, 100 keys, 1 s windows
    let w = v["windows"].as_u64().unwrap();
    assert!((1500..=2100).contains(&w), "{w}");
}

/// With no `--batch-size` the GPU picks the micro-batch size from its measured fixed cost, says
/// so, and keeps a second batch on the device while the first is read back.
#[test]
fn gpu_chooses_its_batch_size_and_overlaps_batches() {
    if !common::gpu_adapter_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = p(dir.path(), "big.parquet");
    let o = run(&["gen", "--events", "600000", "--keys", "2000", "--output", s(&input)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut counts = vec![];
    for backend in ["cpu", "gpu"] {
        let out = p(dir.path(), &format!("{backend}.parquet"));
        let o = run_job(&input, &out, "hop:4s:1s", &["--backend", backend, "--verbose"]);
        let err = stderr(&o);
        assert!(o.status.success(), "{backend}: {err}");
        if backend == "gpu" {
            assert!(
                err.contains("micro-batch:") && err.contains("chosen by the backend"),
                "{err}"
            );
            let line = err.lines().find(|l| l.starts_with("metrics:")).expect("metrics line");
            let overlapped: u64 = line
                .split('(')
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .and_then(|t| t.parse().ok())
                .expect("overlap count");
            assert!(overlapped > 0, "no batch overlapped on the device: {line}");
        }
        counts.push(read(&out).column("count").unwrap().clone());
    }
    assert!(counts[0].equals_missing(&counts[1]), "gpu and cpu counts differ");
}

#[test]
fn gpu_and_cpu_give_the_same_rows() {
    if !common::gpu_adapter_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = generate(
        dir.path(),
        "events.parquet",
        &["--late-fraction", "0.02", "--zipf", "1.1"],
    );
    for window in ["tumble:1s", "hop:5s:1s", "session:20ms"] {
        let mut frames = vec![];
        for backend in ["cpu", "gpu"] {
            let out = p(dir.path(), &format!("{backend}.parquet"));
            let o = run_job(
                &input,
                &out,
                window,
                &["--backend", backend, "--aggs", "count,sum,min,max,mean,var,std"],
            );
            assert!(o.status.success(), "{backend}: {}", stderr(&o));
            if backend == "gpu" {
                assert!(stderr(&o).contains("gpu backend"), "{}", stderr(&o));
            }
            frames.push(read(&out));
        }
        let (c, g) = (&frames[0], &frames[1]);
        assert_eq!(c.shape(), g.shape(), "{window}");
        for name in [
            "key",
            "window_start",
            "window_end",
            "revision",
            "count",
            "min_value",
            "max_value",
        ] {
            assert!(
                c.column(name).unwrap().equals_missing(g.column(name).unwrap()),
                "{window}: column {name} differs"
            );
        }
        for (name, tol) in [
            ("sum_value", 1e-5),
            ("mean_value", 1e-5),
            ("var_value", 1e-5),
            ("std_value", 1e-4),
        ] {
            let a = c.column(name).unwrap().f64().unwrap().clone();
            let b = g.column(name).unwrap().f64().unwrap().clone();
            for (x, y) in a.iter().zip(b.iter()) {
                match (x, y) {
                    (Some(x), Some(y)) => assert!(
                        (x - y).abs() <= tol * x.abs().max(1000.0),
                        "{window} {name}: {x} vs {y}"
                    ),
                    (x, y) => assert_eq!(x.is_none(), y.is_none(), "{window} {name}"),
                }
            }
        }
    }
}

#[test]
fn model_flags_write_predictions_metrics_and_models() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = generate(d, "events.parquet", &[]);
    let out = p(d, "out.parquet");
    let model = p(d, "model");
    let metrics = p(d, "metrics.json");
    let o = run_job(
        &input,
        &out,
        "tumble:100ms",
        &[
            "--backend",
            "cpu",
            "--model",
            "forecast:mlp",
            "--target",
            "mean_value",
            "--history",
            "4",
            "--hidden",
            "16,8",
            "--lr",
            "1e-3",
            "--model-out",
            s(&model),
            "--metrics-output",
            s(&metrics),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let res = read(&out);
    let cols = names(&res);
    assert_eq!(&cols[cols.len() - 2..], &["prediction", "model_version"]);
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
    for k in [
        "task",
        "samples",
        "mae",
        "rmse",
        "train_samples_per_sec",
        "infer_samples_per_sec",
        "backend",
    ] {
        assert!(m.get(k).is_some(), "metrics lack {k}: {m}");
    }
    assert_eq!(m["task"], "forecast");
    assert!(m["samples"].as_u64().unwrap() > 100);
    let predicted = res
        .column("prediction")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .flatten()
        .count() as u64;
    assert_eq!(
        predicted,
        m["samples"].as_u64().unwrap(),
        "one prediction per scored window"
    );
    let files: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f == "model.bpk") && p(d, "model.json").exists() && p(d, "model.adam").exists(),
        "{files:?}"
    );

    // continue from the saved model: the version keeps counting
    let out2 = p(d, "out2.parquet");
    let args = [
        "run",
        "--input",
        s(&input),
        "--output",
        s(&out2),
        "--window",
        "tumble:100ms",
        "--backend",
        "cpu",
        "--model",
        "forecast:mlp",
        "--history",
        "4",
        "--hidden",
        "16,8",
        "--model-in",
        s(&model),
    ];
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = read(&out2)
        .column("model_version")
        .unwrap()
        .u64()
        .unwrap()
        .iter()
        .flatten()
        .min()
        .unwrap();
    assert!(
        v >= m["model_version"].as_u64().unwrap(),
        "a loaded model starts at version {v}"
    );

    // a model with another shape or other features is refused, and nothing is written
    let out3 = p(d, "out3.parquet");
    expect_failure(
        &[
            "run",
            "--input",
            s(&input),
            "--output",
            s(&out3),
            "--window",
            "tumble:100ms",
            "--backend",
            "cpu",
            "--model",
            "forecast:mlp",
            "--history",
            "4",
            "--hidden",
            "16,8",
            "--aggs",
            "count,mean",
            "--model-in",
            s(&model),
        ],
        "trained with features",
        &[&out3],
    );
    expect_failure(
        &[
            "run",
            "--input",
            s(&input),
            "--output",
            s(&out3),
            "--window",
            "tumble:100ms",
            "--model",
            "predict:mlp",
        ],
        "TASK:KIND",
        &[&out3],
    );
    expect_failure(
        &[
            "run",
            "--input",
            s(&input),
            "--output",
            s(&out3),
            "--window",
            "tumble:100ms",
            "--model",
            "forecast:linear",
            "--target",
            "median_value",
        ],
        "target 'median_value'",
        &[&out3],
    );

    // classification with a label column
    let labelled = p(d, "labelled.csv");
    let mut text = String::from("ts,key,value,label\n");
    for i in 0..4000i64 {
        let k = i % 8;
        let v = (k as f64) * 10.0 + (i % 7) as f64;
        text.push_str(&format!("{},{k},{v},{}\n", i * 5, if k >= 4 { 1 } else { 0 }));
    }
    write_csv(&labelled, &text);
    let out4 = p(d, "out4.csv");
    let metrics4 = p(d, "m4.json");
    let o = run_job(
        &labelled,
        &out4,
        "tumble:200ms",
        &[
            "--backend",
            "cpu",
            "--model",
            "classify:linear",
            "--label-col",
            "label",
            "--lr",
            "0.05",
            "--metrics-output",
            s(&metrics4),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics4).unwrap()).unwrap();
    for k in ["logloss", "accuracy", "auc"] {
        assert!(m.get(k).is_some(), "metrics lack {k}: {m}");
    }
    assert!(names(&read(&out4)).contains(&"probability"));
}

/// A Parquet input larger than one read chunk (1,048,576 rows of whole row groups) gives the same
/// rows and the same late side output as the same events read whole from CSV; an error in a
/// later chunk names the row within the whole file and leaves no output behind.
#[test]
fn parquet_read_in_chunks_equals_csv_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &Path| {
        vec![
            "gen".to_string(),
            "--events".into(),
            "1300000".into(),
            "--keys".into(),
            "300".into(),
            "--late-fraction".into(),
            "0.01".into(),
            "--seed".into(),
            "7".into(),
            "--output".into(),
            out.display().to_string(),
        ]
    };
    let (pq, csv) = (p(dir.path(), "in.parquet"), p(dir.path(), "in.csv"));
    for f in [&pq, &csv] {
        let a = args(f);
        let o = run(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let mut outs = vec![];
    for (name, input) in [("pq", &pq), ("csv", &csv)] {
        let (out, late) = (
            p(dir.path(), &format!("{name}.parquet")),
            p(dir.path(), &format!("{name}_late.parquet")),
        );
        let o = run_job(
            input,
            &out,
            "hop:3s:1s",
            &["--backend", "cpu", "--late-output", s(&late), "--batch-size", "100000"],
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        outs.push((read(&out), read(&late)));
    }
    let ((a, al), (b, bl)) = (&outs[0], &outs[1]);
    assert_eq!(a.shape(), b.shape());
    assert!(al.height() > 5000, "late events: {}", al.height());
    assert_eq!(al.shape(), bl.shape());
    for col in ["key", "window_start", "count"] {
        let x = a.column(col).unwrap().cast(&DataType::Int64).unwrap();
        let y = b.column(col).unwrap().cast(&DataType::Int64).unwrap();
        assert!(x.equals_missing(&y), "column {col} differs");
    }
    for col in ["ts", "key"] {
        let x = al.column(col).unwrap().cast(&DataType::Int64).unwrap();
        let y = bl.column(col).unwrap().cast(&DataType::Int64).unwrap();
        assert!(x.equals_missing(&y), "late column {col} differs");
    }

    // A bad timestamp in a later chunk fails the job, named by its row in the whole file, with
    // no output and no temporary file left: a null (whose chunk polars reads), and an
    // out-of-range time in pages fenestra decodes itself.
    let bad_row = 1_200_000usize;
    let bad_time = |name: &str, time: Option<i64>, message: &str| {
        let mut df = read(&pq);
        let ts: Vec<Option<i64>> = df
            .column("ts")
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, v)| if i == bad_row { time } else { v })
            .collect();
        df.with_column(Column::new("ts".into(), ts)).unwrap();
        let bad = p(dir.path(), &format!("{name}.parquet"));
        let mut f = std::fs::File::create(&bad).unwrap();
        ParquetWriter::new(&mut f)
            .with_row_group_size(Some(262_144))
            .finish(&mut df)
            .unwrap();
        let out = p(dir.path(), &format!("{name}_out.parquet"));
        let o = run_job(&bad, &out, "tumble:1s", &["--backend", "cpu"]);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(
            err.contains(&format!("row {bad_row}")) && err.contains(message),
            "{err}"
        );
        assert!(!out.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    };
    bad_time("bad", None, "null timestamp");
    bad_time("far", Some(i64::MAX), "outside the supported range");

    // Damaged bytes in the last row group (read in the second chunk, after output has begun):
    // a clear error, and no output.
    let damaged = p(dir.path(), "damaged.parquet");
    let mut bytes = std::fs::read(&pq).unwrap();
    let at = bytes.len() * 9 / 10;
    for (i, b) in bytes[at..at + 4096].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    std::fs::write(&damaged, bytes).unwrap();
    let out = p(dir.path(), "damaged_out.parquet");
    let o = run_job(&damaged, &out, "tumble:1s", &["--backend", "cpu"]);
    assert!(!o.status.success(), "a damaged row group was read without error");
    let err = stderr(&o);
    assert!(err.contains("damaged.parquet") && err.contains("Parquet"), "{err}");
    assert!(!out.exists());
}

#[test]
fn compression_changes_the_codec_not_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = generate(d, "in.parquet", &["--late-fraction", "0.02"]);
    let mut frames = vec![];
    for (name, codec) in [
        ("uncompressed", "UNCOMPRESSED"),
        ("snappy", "SNAPPY"),
        ("LZ4", "LZ4_RAW"),
        ("zstd", "ZSTD"),
        ("", "LZ4_RAW"),
    ] {
        let (out, late) = run_flagged(d, &input, "tumble:1s", ("--compression", name), &[]);
        for f in [&out, &late] {
            let meta = polars::io::parquet::read::ParquetReader::new(std::fs::File::open(f).unwrap())
                .get_metadata()
                .unwrap()
                .clone();
            for rg in &meta.row_groups {
                for c in rg.parquet_columns() {
                    let got = format!("{:?}", c.compression()).to_uppercase();
                    assert_eq!(got.replace('_', ""), codec.replace('_', ""), "{name}: {}", f.display());
                }
            }
        }
        frames.push((read(&out), read(&late)));
    }
    same_rows_and_flag_errors(
        d,
        &input,
        &frames,
        "--compression",
        ["brotli", "unknown compression 'brotli'"],
        "zstd",
    );
}

/// Runs `window` over `input` on the cpu backend with a late output, `extra`, and `flag` set to
/// `value` (not given when `value` is empty); returns the output and late paths.
fn run_flagged(
    d: &Path,
    input: &Path,
    window: &str,
    (flag, value): (&str, &str),
    extra: &[&str],
) -> (PathBuf, PathBuf) {
    let (out, late) = (
        p(d, &format!("out_{value}.parquet")),
        p(d, &format!("late_{value}.parquet")),
    );
    let mut args = vec!["--late-output", s(&late), "--backend", "cpu"];
    args.extend_from_slice(extra);
    if !value.is_empty() {
        args.extend([flag, value]);
    }
    let o = run_job(input, &out, window, &args);
    assert!(o.status.success(), "{flag} {value}: {}", stderr(&o));
    (out, late)
}

/// The window and late rows of every run in `frames` equal the first's; `flag` with a bad value
/// fails with its message, and with a good one on CSV output says it is for Parquet only; no
/// output file is left by either.
fn same_rows_and_flag_errors(
    d: &Path,
    input: &Path,
    frames: &[(DataFrame, DataFrame)],
    flag: &str,
    [bad_value, message]: [&str; 2],
    good_value: &str,
) {
    let (w0, l0) = &frames[0];
    assert!(
        w0.height() > 50 && l0.height() > 0,
        "{} rows, {} late",
        w0.height(),
        l0.height()
    );
    for (w, l) in &frames[1..] {
        assert!(w.equals_missing(w0), "window rows differ with {flag}");
        assert!(l.equals_missing(l0), "late rows differ with {flag}");
    }
    let out = p(d, "x.parquet");
    let base = ["run", "--input", s(input), "--window", "tumble:1s", "--output"];
    let mut bad = base.to_vec();
    bad.extend([s(&out), flag, bad_value]);
    expect_failure(&bad, message, &[&out]);
    let csv = p(d, "x.csv");
    let mut bad = base.to_vec();
    bad.extend([s(&csv), flag, good_value]);
    expect_failure(&bad, &format!("{flag} applies to Parquet output only"), &[&csv]);
}

#[test]
fn float_encoding_changes_the_layout_not_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = generate(d, "in.parquet", &["--late-fraction", "0.02"]);
    let mut frames = vec![];
    for name in ["", "auto", "PLAIN"] {
        let (out, late) = run_flagged(
            d,
            &input,
            "hop:2s:1s",
            ("--float-encoding", name),
            &["--aggs", "count,mean,std"],
        );
        frames.push((read(&out), read(&late)));
    }
    same_rows_and_flag_errors(
        d,
        &input,
        &frames,
        "--float-encoding",
        ["delta", "unknown float encoding 'delta'"],
        "plain",
    );
}
