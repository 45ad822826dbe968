//! Checks a plugin's output before the host trusts it: one outcome per input
//! record, counts that add up, keys and spans in range, text valid UTF-8,
//! containers inside their record.

use super::{Batch, NO_KEY, Value};
use crate::transform::wit::{Outcome, Output};

/// `Err` says what is malformed (never a value).
pub fn check_output(inputs: usize, out: &Output) -> Result<(), String> {
    if out.outcomes.len() != inputs {
        return Err(format!("{} outcomes for {inputs} input records", out.outcomes.len()));
    }
    let emitted: u64 = out.outcomes.iter().map(|o| if let Outcome::Emit(n) = o { u64::from(*n) } else { 0 }).sum();
    let b = &out.batch;
    if emitted != b.records.len() as u64 {
        return Err(format!("outcomes emit {emitted} records but the batch has {}", b.records.len()));
    }
    let cells: u64 = b.records.iter().map(|&n| u64::from(n)).sum();
    if cells != b.cells.len() as u64 {
        return Err(format!("records count {cells} cells but the batch has {}", b.cells.len()));
    }
    let mut start = 0usize;
    for (r, &n) in b.records.iter().enumerate() {
        check_record(b, start, start + n as usize).map_err(|e| format!("record {r}: {e}"))?;
        start += n as usize;
    }
    Ok(())
}

fn check_record(b: &Batch, start: usize, end: usize) -> Result<(), String> {
    // Open containers: (end cell, is array).
    let mut open: Vec<(usize, bool)> = Vec::new();
    for i in start..end {
        while open.last().is_some_and(|&(e, _)| e <= i) {
            open.pop();
        }
        let in_array = open.last().is_some_and(|&(_, a)| a);
        let c = &b.cells[i];
        if c.key == NO_KEY {
            if !in_array {
                return Err("a field without a key outside an array".into());
            }
        } else if c.key as usize >= b.keys.len() {
            return Err(format!("key index {} out of range ({} keys)", c.key, b.keys.len()));
        }
        match c.value {
            Value::Text(s) => {
                let (from, to) = (s.offset as usize, s.offset as usize + s.len as usize);
                let bytes = b.text.get(from..to).ok_or_else(|| format!("text span {from}..{to} outside the arena"))?;
                std::str::from_utf8(bytes).map_err(|_| "text that is not UTF-8".to_string())?;
            }
            Value::Object(n) | Value::Array(n) => {
                let inner_end = i + 1 + n as usize;
                if inner_end > end || open.last().is_some_and(|&(e, _)| inner_end > e) {
                    return Err("a container longer than its record".into());
                }
                open.push((inner_end, matches!(c.value, Value::Array(_))));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Cell, Span};

    fn output(cells: Vec<Cell>, records: Vec<u32>, outcomes: Vec<Outcome>) -> Output {
        Output { batch: Batch { keys: vec!["k".into()], text: b"abc".to_vec(), cells, records }, outcomes }
    }

    #[test]
    fn accepts_well_formed_output() {
        let cells = vec![
            Cell { key: 0, value: Value::Array(2) },
            Cell { key: NO_KEY, value: Value::Text(Span { offset: 0, len: 3 }) },
            Cell { key: NO_KEY, value: Value::Null },
        ];
        assert_eq!(check_output(2, &output(cells, vec![3], vec![Outcome::Emit(1), Outcome::Drop])), Ok(()));
    }

    #[test]
    fn names_each_malformation() {
        let text = |offset, len| Cell { key: 0, value: Value::Text(Span { offset, len }) };
        let cases = [
            (output(vec![], vec![], vec![]), 1, "0 outcomes for 1 input records"),
            (output(vec![], vec![], vec![Outcome::Emit(1)]), 1, "outcomes emit 1 records but the batch has 0"),
            (output(vec![text(0, 1)], vec![2], vec![Outcome::Emit(1)]), 1, "records count 2 cells but the batch has 1"),
            (output(vec![text(2, 5)], vec![1], vec![Outcome::Emit(1)]), 1, "record 0: text span 2..7 outside the arena"),
            (output(vec![Cell { key: 7, value: Value::Null }], vec![1], vec![Outcome::Emit(1)]), 1, "record 0: key index 7 out of range (1 keys)"),
            (output(vec![Cell { key: NO_KEY, value: Value::Null }], vec![1], vec![Outcome::Emit(1)]), 1, "record 0: a field without a key outside an array"),
            (output(vec![Cell { key: 0, value: Value::Object(3) }], vec![1], vec![Outcome::Emit(1)]), 1, "record 0: a container longer than its record"),
        ];
        for (out, inputs, want) in cases {
            assert_eq!(check_output(inputs, &out), Err(want.to_string()));
        }
    }
}
