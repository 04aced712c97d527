//! Every JSON example in docs/PROTOCOL.md parses into our types and serializes back to the same
//! fields, so the document and the code cannot drift apart unnoticed.

use hark_protocol::{parse_client_frame, ClientMessage, ServerMessage};
use serde_json::Value;

/// The JSON objects of the document: the lines of ```json blocks and the `→ {…}` / `← {…}` lines
/// of the example call, with the document's elisions (`:…`) filled with a number.
fn examples() -> Vec<(Option<char>, Value)> {
    let doc = include_str!("../../../docs/PROTOCOL.md");
    let mut out = Vec::new();
    let mut in_json = false;
    let mut json_block = String::new();
    for line in doc.lines() {
        if line.starts_with("```json") {
            in_json = true;
            continue;
        }
        if in_json {
            if line.starts_with("```") {
                in_json = false;
                // A block may hold one object over several lines or one per line.
                for object in split_objects(&json_block) {
                    out.push((None, parse_elided(&object)));
                }
                json_block.clear();
            } else {
                json_block.push_str(line);
                json_block.push('\n');
            }
            continue;
        }
        for arrow in ['→', '←'] {
            if let Some((_, rest)) = line.split_once(&format!("{arrow} {{")) {
                out.push((Some(arrow), parse_elided(&format!("{{{rest}"))));
            }
        }
    }
    out
}

fn split_objects(block: &str) -> Vec<String> {
    let mut objects = Vec::new();
    let (mut depth, mut current) = (0, String::new());
    for c in block.chars() {
        if depth > 0 || c == '{' {
            current.push(c);
        }
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    objects.push(std::mem::take(&mut current));
                }
            }
            _ => {}
        }
    }
    objects
}

fn parse_elided(text: &str) -> Value {
    let filled = text.replace(":…,", ":0,").replace(":…}", ":0}");
    serde_json::from_str(&filled).unwrap_or_else(|e| panic!("example is not JSON ({e}): {filled}"))
}

/// Every field of `original` is in `round_trip` with the same value.
fn assert_subset(original: &Value, round_trip: &Value) {
    let (Value::Object(a), Value::Object(b)) = (original, round_trip) else { panic!("not objects") };
    for (key, value) in a {
        assert_eq!(Some(value), b.get(key), "field {key} of {original} came back as {round_trip}");
    }
}

#[test]
fn every_example_round_trips() {
    let examples = examples();
    assert!(examples.len() >= 15, "found only {} examples", examples.len());
    let mut client_frames = 0;
    let mut server_frames = 0;
    for (arrow, value) in examples {
        let is_client = match arrow {
            Some(arrow) => arrow == '→',
            None => ClientMessage::TYPES.contains(&value["type"].as_str().unwrap())
                && value.get("re").is_none(),
        };
        if is_client {
            let frame = parse_client_frame(&value.to_string()).unwrap_or_else(|e| panic!("{value}: {e:?}"));
            let back: Value = serde_json::from_str(&frame.to_json()).unwrap();
            assert_subset(&value, &back);
            client_frames += 1;
        } else {
            let message: ServerMessage = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_ne!(message, ServerMessage::Unknown, "{value}");
            let back = serde_json::to_value(&message).unwrap();
            assert_subset(&value, &back);
            server_frames += 1;
        }
    }
    assert!(client_frames >= 6 && server_frames >= 9, "{client_frames} client, {server_frames} server");
}

#[test]
fn unknown_server_types_are_tolerated() {
    let message: ServerMessage = serde_json::from_str(r#"{"type":"call.something_new","x":1}"#).unwrap();
    assert_eq!(message, ServerMessage::Unknown);
}
