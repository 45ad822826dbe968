//! Projection (the `fields` export of the `projecting-plugin` world): a step
//! that names the top-level fields it reads and writes is passed records
//! with only the fields it reads, and each record it emits is completed
//! with the input record's other fields. The host does this on every call;
//! [`crate::run`] does the same natively, so a plugin's own tests run it
//! exactly as the host will.
//!
//! A field is "owned" by the step when `reads` or `writes` names it: the
//! step decides what becomes of it (kept, replaced, removed). Every other
//! top-level field passes through as it came, in its place.

use crate::record::kind::{ARRAY, OBJECT, TEXT};
use crate::record::{Columns, ColumnsRef, NO_KEY, Outcome};
use std::collections::{HashMap, HashSet};

/// Cells taken by the field starting at cell `i`: 1, or 1 and its members.
#[inline]
fn width(b: ColumnsRef<'_>, i: usize) -> usize {
    match b.cell_kinds[i] {
        OBJECT | ARRAY => 1 + b.cell_values[i] as usize,
        _ => 1,
    }
}

/// A step's declared fields as sets, made once per configured instance:
/// the plugin chooses how many it declares, and each call looks every key
/// of its batch up in them.
pub struct Declared {
    reads: HashSet<String>,
    /// Read or written.
    owned: HashSet<String>,
    /// Written without being read: an input record's field of such a name
    /// is owned but not given to the step.
    write_only: HashSet<String>,
}

impl Declared {
    pub fn new(reads: &[String], writes: &[String]) -> Self {
        let reads: HashSet<String> = reads.iter().cloned().collect();
        let write_only: HashSet<String> = writes.iter().filter(|w| !reads.contains(*w)).cloned().collect();
        let owned = reads.union(&write_only).cloned().collect();
        Declared { reads, owned, write_only }
    }
}

/// Whether each of `keys` is in `set`.
fn named(keys: &[String], set: &HashSet<String>) -> Vec<bool> {
    keys.iter().map(|k| set.contains(k.as_str())).collect()
}

/// Where a projected batch's cells came from, for [`merge`].
pub struct Places {
    /// The input cell of each projected cell, when every projected field
    /// is one cell (no containers).
    cells: Option<Vec<u32>>,
    /// Cells of each projected record.
    records: Vec<u32>,
}

/// The records of `batch` (a checked batch) with only their top-level
/// fields named in `reads`, each whole, and only the keys those use (each
/// key is a string the component allocates for, every call).
pub fn project(batch: ColumnsRef<'_>, declared: &Declared) -> (Columns, Places) {
    let read = named(batch.keys, &declared.reads);
    let mut out = Columns { records: Vec::with_capacity(batch.records.len()), ..Columns::default() };
    // Each input key's index among the projected batch's keys, once used.
    let mut key_to = vec![NO_KEY; batch.keys.len()];
    let mut cells = Some(Vec::new());
    let mut start = 0;
    for &n in batch.records {
        let end = start + n as usize;
        let before = out.cell_keys.len();
        let mut i = start;
        while i < end {
            let w = width(batch, i);
            if read.get(batch.cell_keys[i] as usize).copied().unwrap_or(false) {
                match (&mut cells, w) {
                    (Some(c), 1) => c.push(i as u32),
                    _ => cells = None,
                }
                for &k in &batch.cell_keys[i..i + w] {
                    let k = match k {
                        NO_KEY => NO_KEY,
                        k if key_to[k as usize] == NO_KEY => {
                            key_to[k as usize] = out.keys.len() as u32;
                            out.keys.push(batch.keys[k as usize].clone());
                            key_to[k as usize]
                        }
                        k => key_to[k as usize],
                    };
                    out.cell_keys.push(k);
                }
                push_all(&mut out.cell_kinds, &batch.cell_kinds[i..i + w]);
                // Text moves to the new arena: only what the step reads
                // crosses the boundary.
                for j in i..i + w {
                    let v = batch.cell_values[j];
                    out.cell_values.push(if batch.cell_kinds[j] == TEXT {
                        let (offset, len) = ((v >> 32) as usize, v as u32 as usize);
                        let at = out.text.len() as u64;
                        out.text.extend_from_slice(&batch.text[offset..offset + len]);
                        (at << 32) | len as u64
                    } else {
                        v
                    });
                }
            }
            i += w;
        }
        out.records.push((out.cell_keys.len() - before) as u32);
        start = end;
    }
    let places = Places { cells, records: out.records.clone() };
    (out, places)
}

/// Appends `src` to `dst`: element by element when short (most fields are
/// one cell, and a call to `memmove` per cell costs more than the copy).
#[inline]
fn push_all<T: Copy>(dst: &mut Vec<T>, src: &[T]) {
    if src.len() <= 8 {
        for &x in src {
            dst.push(x);
        }
    } else {
        dst.extend_from_slice(src);
    }
}

/// A part of an input record: a run of fields the step does not own
/// (copied as they are), or the place of one field it owns.
#[derive(Clone, Copy)]
enum Part {
    Run(usize, usize),
    Owned,
}

/// Builds the merged batch: the input's cells as they are, the step's
/// with their keys mapped and their text moved after the input's.
struct Merger<'a> {
    input: ColumnsRef<'a>,
    out: ColumnsRef<'a>,
    key_map: Vec<u32>,
    /// Whether `key_map` maps every key to itself.
    same_keys: bool,
    owned: Vec<bool>,
    text_base: u64,
    m: Columns,
}

impl Merger<'_> {
    #[inline]
    fn copy_input(&mut self, from: usize, to: usize) {
        push_all(&mut self.m.cell_keys, &self.input.cell_keys[from..to]);
        push_all(&mut self.m.cell_kinds, &self.input.cell_kinds[from..to]);
        push_all(&mut self.m.cell_values, &self.input.cell_values[from..to]);
    }

    /// `key` (of the merged batch), if the step owns it: it may emit it.
    #[inline]
    fn may_emit(&self, key: u32) -> Result<u32, String> {
        if self.owned[key as usize] {
            return Ok(key);
        }
        let name = &self.m.keys[key as usize];
        Err(format!("field `{name}` is not among the fields it declared (reads and writes)"))
    }

    /// Copies the step's top-level fields in cells `from..to`, refusing
    /// one the step does not own.
    #[inline]
    fn copy_out(&mut self, from: usize, to: usize) -> Result<(), String> {
        let out = self.out;
        let mut i = from;
        while i < to {
            self.may_emit(self.map(out.cell_keys[i]))?;
            i += width(out, i);
        }
        if self.same_keys {
            push_all(&mut self.m.cell_keys, &out.cell_keys[from..to]);
        } else {
            for &k in &out.cell_keys[from..to] {
                let k = if k == NO_KEY { NO_KEY } else { self.key_map[k as usize] };
                self.m.cell_keys.push(k);
            }
        }
        push_all(&mut self.m.cell_kinds, &out.cell_kinds[from..to]);
        for i in from..to {
            let v = out.cell_values[i];
            self.m.cell_values.push(if out.cell_kinds[i] == TEXT { v + (self.text_base << 32) } else { v });
        }
        Ok(())
    }

    #[inline]
    fn map(&self, key: u32) -> u32 {
        if self.same_keys { key } else { self.key_map[key as usize] }
    }
}

/// Whether every record emitted at most one record, of as many one-cell
/// fields as it was given (then [`merge`] copies the input records kept
/// and replaces those cells in place), and no field the
/// step may write without reading is in the batch (its places would be
/// the step's too).
fn one_for_one(
    input: ColumnsRef<'_>,
    places: &Places,
    out: ColumnsRef<'_>,
    outcomes: &[Outcome],
    declared: &Declared,
) -> bool {
    let mut emitted = out.records.iter();
    let kept = outcomes.iter().zip(&places.records).all(|(o, &given)| match o {
        Outcome::Emit(1) => emitted.next() == Some(&given),
        Outcome::Emit(0) | Outcome::Drop | Outcome::Reject(_) => true,
        Outcome::Emit(_) => false,
    });
    kept && out.cell_kinds.iter().all(|&k| k != OBJECT && k != ARRAY)
        && !input.keys.iter().any(|k| declared.write_only.contains(k.as_str()))
}

/// Each record the step emitted (`out`, checked, and `outcomes`, one per
/// record of `input`, checked against it) completed with the top-level
/// fields of its input record that neither `reads` nor `writes` names.
/// Those keep their place. The step's fields take the places of the
/// input record's owned fields, in order: the first the first owned
/// field's place, and so on; those beyond the last owned place follow it;
/// places left over stay empty (the field is gone); with no owned field in
/// the input record, the step's fields come last. So a step that replaces
/// fields one for one, or adds fields after the one they come from, gives
/// the same record whole or projected. `Err` names a field the step
/// emitted without owning it.
pub fn merge(
    input: ColumnsRef<'_>,
    places: &Places,
    out: ColumnsRef<'_>,
    outcomes: &[Outcome],
    declared: &Declared,
) -> Result<Columns, String> {
    let mut keys = input.keys.to_vec();
    // The step chooses how many keys it answers with: a search of the
    // input's keys each while both lists are short, a map beyond.
    let key_map: Vec<u32> = if input.keys.len() * out.keys.len() <= 256 {
        out.keys
            .iter()
            .map(|k| match keys.iter().position(|x| x == k) {
                Some(i) => i as u32,
                None => {
                    keys.push(k.clone());
                    (keys.len() - 1) as u32
                }
            })
            .collect()
    } else {
        let mut index: HashMap<&str, u32> = HashMap::with_capacity(input.keys.len() + out.keys.len());
        for (i, k) in input.keys.iter().enumerate() {
            index.entry(k.as_str()).or_insert(i as u32);
        }
        out.keys
            .iter()
            .map(|k| {
                *index.entry(k.as_str()).or_insert_with(|| {
                    keys.push(k.clone());
                    (keys.len() - 1) as u32
                })
            })
            .collect()
    };
    let owned = named(&keys, &declared.owned);
    let text_base = input.text.len() as u64;
    if text_base + out.text.len() as u64 > u64::from(u32::MAX) {
        return Err("the batch's text would exceed 4 GiB".into());
    }
    let mut text = Vec::with_capacity(input.text.len() + out.text.len());
    text.extend_from_slice(input.text);
    text.extend_from_slice(out.text);
    let cells = input.cell_keys.len() + out.cell_keys.len();
    let same_keys = key_map.iter().enumerate().all(|(i, &k)| k as usize == i);
    let mut g = Merger {
        input,
        out,
        key_map,
        same_keys,
        owned,
        text_base,
        m: Columns {
            keys,
            text,
            cell_keys: Vec::with_capacity(cells),
            cell_kinds: Vec::with_capacity(cells),
            cell_values: Vec::with_capacity(cells),
            records: Vec::with_capacity(out.records.len()),
        },
    };
    match &places.cells {
        Some(cells) if one_for_one(input, places, out, outcomes, declared) => {
            g.in_place(cells, &places.records, outcomes)?
        }
        _ => g.by_parts(outcomes)?,
    }
    Ok(g.m)
}

impl Merger<'_> {
    /// The answer where every record emitted at most one record of as
    /// many one-cell fields as it was given (see [`one_for_one`]): each
    /// emitted field takes the place of the field it was given, so the
    /// kept input records' cells are copied in runs and those cells
    /// replaced. `cells` and `given` are the projection's [`Places`].
    fn in_place(&mut self, cells: &[u32], given: &[u32], outcomes: &[Outcome]) -> Result<(), String> {
        let (input, out) = (self.input, self.out);
        let mut patches: Vec<(usize, usize)> = Vec::with_capacity(out.cell_keys.len());
        // The run of kept records not copied yet: its first cell, and where
        // that cell goes.
        let (mut run_from, mut run_to) = (0usize, 0usize);
        let (mut in_start, mut c_in, mut c_out) = (0usize, 0usize, 0usize);
        for (r, outcome) in outcomes.iter().enumerate() {
            let (n, k) = (input.records[r] as usize, given[r] as usize);
            if matches!(outcome, Outcome::Emit(1)) {
                for q in 0..k {
                    patches.push((run_to + (cells[c_in + q] as usize - run_from), c_out + q));
                }
                self.m.records.push(n as u32);
                c_out += k;
            } else {
                self.copy_input(run_from, in_start);
                (run_from, run_to) = (in_start + n, self.m.cell_keys.len());
            }
            c_in += k;
            in_start += n;
        }
        self.copy_input(run_from, in_start);
        for (at, c) in patches {
            let key = self.may_emit(self.map(out.cell_keys[c]))?;
            let v = out.cell_values[c];
            self.m.cell_keys[at] = key;
            self.m.cell_kinds[at] = out.cell_kinds[c];
            self.m.cell_values[at] = if out.cell_kinds[c] == TEXT { v + (self.text_base << 32) } else { v };
        }
        Ok(())
    }

    /// Any other answer, record by record: each input record in runs of
    /// fields the step does not own and owned places, filled in order.
    fn by_parts(&mut self, outcomes: &[Outcome]) -> Result<(), String> {
        let (input, out) = (self.input, self.out);
        let mut parts: Vec<Part> = Vec::new();
        let (mut in_start, mut out_start, mut emitted) = (0usize, 0usize, 0usize);
        for (r, outcome) in outcomes.iter().enumerate() {
            let in_end = in_start + input.records[r] as usize;
            let Outcome::Emit(k) = outcome else {
                in_start = in_end;
                continue;
            };
            // The input record in parts, once for all it emitted.
            parts.clear();
            let mut places = 0;
            let mut j = in_start;
            while j < in_end {
                let w = width(input, j);
                if self.owned[input.cell_keys[j] as usize] {
                    parts.push(Part::Owned);
                    places += 1;
                } else if let Some(Part::Run(_, end)) =
                    parts.last_mut().filter(|p| matches!(p, Part::Run(_, e) if *e == j))
                {
                    *end = j + w;
                } else {
                    parts.push(Part::Run(j, j + w));
                }
                j += w;
            }
            for _ in 0..*k {
                let out_end = out_start + out.records[emitted] as usize;
                let before = self.m.cell_keys.len();
                let (mut i, mut place) = (out_start, 0);
                for &part in &parts {
                    match part {
                        Part::Run(from, to) => self.copy_input(from, to),
                        Part::Owned => {
                            place += 1;
                            // The last place takes all the step's fields left.
                            let to = if place == places || i >= out_end { out_end } else { i + width(out, i) };
                            self.copy_out(i, to)?;
                            i = to;
                        }
                    }
                }
                self.copy_out(i, out_end)?;
                self.m.records.push((self.m.cell_keys.len() - before) as u32);
                out_start = out_end;
                emitted += 1;
            }
            in_start = in_end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Batch, Cell, Span, Value};

    /// A batch of records given as (key, text) fields.
    fn batch(records: &[&[(&str, &str)]]) -> Columns {
        let mut keys: Vec<String> = Vec::new();
        let mut text = Vec::new();
        let mut cells = Vec::new();
        let mut counts = Vec::new();
        for r in records {
            for (k, v) in r.iter() {
                let key = match keys.iter().position(|x| x == k) {
                    Some(i) => i,
                    None => {
                        keys.push(k.to_string());
                        keys.len() - 1
                    }
                } as u32;
                let span = Span { offset: text.len() as u32, len: v.len() as u32 };
                text.extend_from_slice(v.as_bytes());
                cells.push(Cell { key, value: Value::Text(span) });
            }
            counts.push(r.len() as u32);
        }
        Batch { keys, text, cells, records: counts }.into_columns()
    }

    /// Each record as (key, text) pairs, in order.
    fn fields(c: &Columns) -> Vec<Vec<(String, String)>> {
        let mut start = 0;
        c.records
            .iter()
            .map(|&n| {
                let r = (start..start + n as usize)
                    .map(|i| {
                        let v = c.cell_values[i];
                        let (o, l) = ((v >> 32) as usize, v as u32 as usize);
                        let text = String::from_utf8(c.text[o..o + l].to_vec()).unwrap();
                        (c.keys[c.cell_keys[i] as usize].clone(), text)
                    })
                    .collect();
                start += n as usize;
                r
            })
            .collect()
    }

    /// [`merge`] of `out` for `input` projected by `reads`.
    fn mg(
        input: &Columns,
        out: &Columns,
        outcomes: &[Outcome],
        reads: &[String],
        writes: &[String],
    ) -> Result<Columns, String> {
        let declared = Declared::new(reads, writes);
        let (_, places) = project(input.as_ref(), &declared);
        merge(input.as_ref(), &places, out.as_ref(), outcomes, &declared)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_step_sees_only_what_it_reads_and_gets_the_rest_back_in_place() {
        let input = batch(&[&[("a", "1"), ("ip", "secret"), ("b", "2")], &[("b", "3"), ("a", "4")]]);
        let reads = names(&["ip"]);
        let (p, _) = project(input.as_ref(), &Declared::new(&reads, &[]));
        assert_eq!(fields(&p), vec![vec![("ip".into(), "secret".into())], vec![]]);
        assert_eq!(p.text, b"secret");
        // The step replaces `ip` and adds `n` to the first, drops the second.
        let out = batch(&[&[("ip", "hash"), ("n", "x")]]);
        let merged = mg(&input, &out, &[Outcome::Emit(1), Outcome::Drop], &reads, &names(&["n"])).unwrap();
        let want = vec![vec![("a", "1"), ("ip", "hash"), ("n", "x"), ("b", "2")]];
        let want: Vec<Vec<(String, String)>> =
            want.into_iter().map(|r| r.into_iter().map(|(k, v)| (k.into(), v.into())).collect()).collect();
        assert_eq!(fields(&merged), want);
        merged.as_ref().check().unwrap();
        // One field for one, in place (the cells replaced); a field not
        // declared is refused there too.
        let out = batch(&[&[("ip", "h1")], &[]]);
        let merged = mg(&input, &out, &[Outcome::Emit(1), Outcome::Emit(1)], &reads, &[]).unwrap();
        let want: Vec<Vec<(String, String)>> = vec![
            vec![("a".into(), "1".into()), ("ip".into(), "h1".into()), ("b".into(), "2".into())],
            vec![("b".into(), "3".into()), ("a".into(), "4".into())],
        ];
        assert_eq!(fields(&merged), want);
        merged.as_ref().check().unwrap();
        // A filter's answer: the kept records in runs, their cells replaced.
        let three = batch(&[&[("a", "1"), ("ip", "x")], &[("a", "2"), ("ip", "y")], &[("a", "3"), ("ip", "z")]]);
        let out = batch(&[&[("ip", "x2")], &[("ip", "z2")]]);
        let merged = mg(&three, &out, &[Outcome::Emit(1), Outcome::Drop, Outcome::Emit(1)], &reads, &[]).unwrap();
        let want: Vec<Vec<(String, String)>> = vec![
            vec![("a".into(), "1".into()), ("ip".into(), "x2".into())],
            vec![("a".into(), "3".into()), ("ip".into(), "z2".into())],
        ];
        assert_eq!(fields(&merged), want);
        merged.as_ref().check().unwrap();
        let out = batch(&[&[("b", "h1")], &[]]);
        let e = mg(&input, &out, &[Outcome::Emit(1), Outcome::Emit(1)], &reads, &[]).unwrap_err();
        assert!(e.contains("`b`"), "{e}");
    }

    #[test]
    fn each_of_several_records_from_one_gets_the_rest_and_an_undeclared_field_is_refused() {
        let input = batch(&[&[("k", "1"), ("v", "a")]]);
        let reads = names(&["v"]);
        let out = batch(&[&[("v", "x")], &[("v", "y")]]);
        let merged = mg(&input, &out, &[Outcome::Emit(2)], &reads, &[]).unwrap();
        assert_eq!(fields(&merged)[1], vec![("k".to_string(), "1".to_string()), ("v".into(), "y".into())]);
        let sneaky = batch(&[&[("v", "x"), ("k", "2")]]);
        let e = mg(&input, &sneaky, &[Outcome::Emit(1)], &reads, &[]).unwrap_err();
        assert!(e.contains("`k`"), "{e}");
        // The step's fields fill the owned places in order, the rest after
        // the last; with no owned field in the input, at the end.
        let wide = batch(&[&[("v", "a"), ("k", "1"), ("u", "b"), ("z", "2")]]);
        let two = names(&["v", "u"]);
        let out = batch(&[&[("w", "1"), ("v", "x"), ("u", "y")]]);
        let merged = mg(&wide, &out, &[Outcome::Emit(1)], &two, &names(&["w"])).unwrap();
        let order: Vec<String> = fields(&merged)[0].iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(order, ["w", "k", "v", "u", "z"]);
        let one = batch(&[&[("v", "x")]]);
        let merged = mg(&wide, &one, &[Outcome::Emit(1)], &two, &[]).unwrap();
        let order: Vec<String> = fields(&merged)[0].iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(order, ["v", "k", "z"]);
        let out = batch(&[&[("w", "1"), ("v", "x")]]);
        let bare = batch(&[&[("k", "1")]]);
        let merged = mg(&bare, &out, &[Outcome::Emit(1)], &reads, &names(&["w"])).unwrap();
        let order: Vec<String> = fields(&merged)[0].iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(order, ["k", "w", "v"]);
        // A field the step owns but does not emit is gone.
        let none = batch(&[&[]]);
        let merged = mg(&input, &none, &[Outcome::Emit(1)], &reads, &[]).unwrap();
        assert_eq!(fields(&merged), vec![vec![("k".to_string(), "1".to_string())]]);
    }

    #[test]
    fn a_container_crosses_whole_with_its_text() {
        // a = "1", o = { x = "tt", y = ["u"] }
        let t = |offset, len| Value::Text(Span { offset, len });
        let cells = vec![
            Cell { key: 0, value: t(0, 1) },
            Cell { key: 1, value: Value::Object(3) },
            Cell { key: 2, value: t(1, 2) },
            Cell { key: 3, value: Value::Array(1) },
            Cell { key: NO_KEY, value: t(3, 1) },
        ];
        let input = Batch { keys: names(&["a", "o", "x", "y"]), text: b"1ttu".to_vec(), cells, records: vec![5] };
        let input = input.into_columns();
        input.as_ref().check().unwrap();
        let reads = names(&["o"]);
        let (p, _) = project(input.as_ref(), &Declared::new(&reads, &[]));
        p.as_ref().check().unwrap();
        assert_eq!((p.records.as_slice(), p.text.as_slice()), (&[4u32][..], &b"ttu"[..]));
        // Emitted as it came, it is merged back into the record as it was.
        let merged = mg(&input, &p, &[Outcome::Emit(1)], &reads, &[]).unwrap();
        merged.as_ref().check().unwrap();
        assert_eq!((&merged.cell_keys, &merged.cell_kinds), (&input.cell_keys, &input.cell_kinds));
        let texts = |c: &Columns| -> Vec<Vec<u8>> {
            (0..c.cell_keys.len())
                .filter(|&i| c.cell_kinds[i] == TEXT)
                .map(|i| {
                    let v = c.cell_values[i];
                    c.text[(v >> 32) as usize..(v >> 32) as usize + v as u32 as usize].to_vec()
                })
                .collect()
        };
        assert_eq!(texts(&merged), texts(&input));
    }
}
