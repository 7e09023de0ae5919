//! A minimal, safe Python pickle reader for the CIFAR "python version" batches (written by Python 2's cPickle,
//! protocol 2): dicts, lists, tuples, strings/bytes, ints and numpy arrays rebuilt via
//! `numpy.core.multiarray._reconstruct` + BUILD. Nothing is executed: globals are recorded as names, and
//! only the numpy reconstruction pattern is interpreted. Also a writer of that exact form, for test fixtures.
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    Str(String),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    /// `callable(*args)` then optionally `__setstate__(state)`.
    Reduce(Box<Value>, Box<Value>, Option<Box<Value>>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Look up a string key in a dict.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_int_list(&self) -> Option<Vec<i64>> {
        match self {
            Value::List(v) | Value::Tuple(v) => v
                .iter()
                .map(|x| {
                    if let Value::Int(i) = x {
                        Some(*i)
                    } else {
                        None
                    }
                })
                .collect(),
            _ => None,
        }
    }

    pub fn as_str_list(&self) -> Option<Vec<String>> {
        match self {
            Value::List(v) | Value::Tuple(v) => v
                .iter()
                .map(|x| x.as_str().map(|s| s.to_string()))
                .collect(),
            _ => None,
        }
    }

    /// A uint8 numpy array rebuilt by `_reconstruct` + BUILD: (shape, raw bytes).
    pub fn as_u8_array(&self) -> Option<(Vec<usize>, Vec<u8>)> {
        let Value::Reduce(f, _, Some(state)) = self else {
            return None;
        };
        let Value::Global(m, n) = f.as_ref() else {
            return None;
        };
        if !(m.starts_with("numpy") && n == "_reconstruct") {
            return None;
        }
        // state = (version, shape, dtype, is_fortran, rawdata)
        let Value::Tuple(st) = state.as_ref() else {
            return None;
        };
        let shape: Vec<usize> = st
            .get(1)?
            .as_int_list()?
            .into_iter()
            .map(|x| x as usize)
            .collect();
        let raw = match st.get(4)? {
            Value::Bytes(b) => b.clone(),
            Value::Str(s) => s.chars().map(|c| c as u32 as u8).collect(),
            _ => return None,
        };
        // dtype must be 1 byte per element (uint8).
        if let Value::Reduce(d, args, _) = st.get(2)? {
            if let (Value::Global(_, dn), Value::Tuple(a)) = (d.as_ref(), args.as_ref()) {
                if dn != "dtype" || a.first().and_then(|x| x.as_str()) != Some("u1") {
                    return None;
                }
            }
        }
        (shape.iter().product::<usize>() == raw.len()).then_some((shape, raw))
    }
}

/// Parse a pickle. Errors say which opcode at which offset was not understood.
pub fn parse(b: &[u8]) -> Result<Value, String> {
    let mut stack: Vec<Value> = vec![];
    let mut marks: Vec<usize> = vec![];
    let mut memo: BTreeMap<u32, Value> = BTreeMap::new();
    let mut p = 0usize;
    let take = |p: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = b
            .get(*p..*p + n)
            .ok_or_else(|| format!("truncated at byte {p}"))?;
        *p += n;
        Ok(s)
    };
    let line = |p: &mut usize| -> Result<String, String> {
        let start = *p;
        while *p < b.len() && b[*p] != b'\n' {
            *p += 1;
        }
        let s = String::from_utf8_lossy(&b[start..*p]).into_owned();
        *p += 1;
        Ok(s)
    };
    fn pop(stack: &mut Vec<Value>) -> Result<Value, String> {
        stack.pop().ok_or_else(|| "stack underflow".to_string())
    }
    fn pop_mark(stack: &mut Vec<Value>, marks: &mut Vec<usize>) -> Result<Vec<Value>, String> {
        let m = marks.pop().ok_or("MARK missing")?;
        Ok(stack.split_off(m.min(stack.len())))
    }
    loop {
        let op = *b.get(p).ok_or("no STOP opcode")?;
        let at = p;
        p += 1;
        match op {
            0x80 => {
                take(&mut p, 1)?;
            } // PROTO
            b'.' => return pop(&mut stack),
            b'(' => marks.push(stack.len()),
            b'}' => stack.push(Value::Dict(vec![])),
            b']' => stack.push(Value::List(vec![])),
            b')' => stack.push(Value::Tuple(vec![])),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::Int(take(&mut p, 1)?[0] as i64)),
            b'M' => {
                let s = take(&mut p, 2)?;
                stack.push(Value::Int(u16::from_le_bytes([s[0], s[1]]) as i64))
            }
            b'J' => {
                let s = take(&mut p, 4)?;
                stack.push(Value::Int(
                    i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as i64
                ))
            }
            0x8a => {
                // LONG1
                let n = take(&mut p, 1)?[0] as usize;
                let s = take(&mut p, n)?;
                let mut v: i64 = 0;
                for (i, &x) in s.iter().enumerate().take(8) {
                    v |= (x as i64) << (8 * i);
                }
                if n > 0 && n < 8 && s[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v))
            }
            b'I' => {
                let l = line(&mut p)?;
                stack.push(match l.as_str() {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    s => Value::Int(s.trim().parse().map_err(|_| format!("bad INT at {at}"))?),
                })
            }
            b'G' => {
                let s = take(&mut p, 8)?;
                stack.push(Value::Float(f64::from_be_bytes(
                    s.try_into().map_err(|_| "bad float")?,
                )))
            }
            b'U' => {
                let n = take(&mut p, 1)?[0] as usize;
                stack.push(Value::Bytes(take(&mut p, n)?.to_vec()))
            }
            b'T' => {
                let s = take(&mut p, 4)?;
                let n = u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
                stack.push(Value::Bytes(take(&mut p, n)?.to_vec()))
            }
            b'C' => {
                let n = take(&mut p, 1)?[0] as usize;
                stack.push(Value::Bytes(take(&mut p, n)?.to_vec()))
            }
            b'B' => {
                let s = take(&mut p, 4)?;
                let n = u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
                stack.push(Value::Bytes(take(&mut p, n)?.to_vec()))
            }
            b'X' => {
                let s = take(&mut p, 4)?;
                let n = u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
                stack.push(Value::Str(
                    String::from_utf8_lossy(take(&mut p, n)?).into_owned(),
                ))
            }
            0x8c => {
                let n = take(&mut p, 1)?[0] as usize;
                stack.push(Value::Str(
                    String::from_utf8_lossy(take(&mut p, n)?).into_owned(),
                ))
            }
            b'c' => {
                let m = line(&mut p)?;
                let n = line(&mut p)?;
                stack.push(Value::Global(m, n))
            }
            b'q' => {
                let i = take(&mut p, 1)?[0] as u32;
                memo.insert(i, stack.last().cloned().ok_or("BINPUT on empty stack")?);
            }
            b'r' => {
                let s = take(&mut p, 4)?;
                memo.insert(
                    u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
                    stack.last().cloned().ok_or("LONG_BINPUT on empty stack")?,
                );
            }
            0x94 => {
                let i = memo.len() as u32;
                memo.insert(i, stack.last().cloned().ok_or("MEMOIZE on empty stack")?);
            }
            b'h' => {
                let i = take(&mut p, 1)?[0] as u32;
                stack.push(memo.get(&i).cloned().ok_or(format!("BINGET {i} unknown"))?)
            }
            b'j' => {
                let s = take(&mut p, 4)?;
                let i = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                stack.push(
                    memo.get(&i)
                        .cloned()
                        .ok_or(format!("LONG_BINGET {i} unknown"))?,
                )
            }
            0x85 => {
                let a = pop(&mut stack)?;
                stack.push(Value::Tuple(vec![a]))
            }
            0x86 => {
                let b2 = pop(&mut stack)?;
                let a = pop(&mut stack)?;
                stack.push(Value::Tuple(vec![a, b2]))
            }
            0x87 => {
                let c = pop(&mut stack)?;
                let b2 = pop(&mut stack)?;
                let a = pop(&mut stack)?;
                stack.push(Value::Tuple(vec![a, b2, c]))
            }
            b't' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::Tuple(items))
            }
            b'l' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::List(items))
            }
            b'd' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                let mut d = vec![];
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
                stack.push(Value::Dict(d))
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.push(v),
                    _ => return Err(format!("APPEND to a non-list at {at}")),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return Err(format!("APPENDS to a non-list at {at}")),
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.push((k, v)),
                    _ => return Err(format!("SETITEM on a non-dict at {at}")),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    _ => return Err(format!("SETITEMS on a non-dict at {at}")),
                }
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                stack.push(Value::Reduce(Box::new(f), Box::new(args), None))
            }
            b'b' => {
                let state = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Reduce(_, _, s)) => *s = Some(Box::new(state)),
                    _ => return Err(format!("BUILD on a non-object at {at}")),
                }
            }
            0x95 => {
                take(&mut p, 8)?;
            } // FRAME
            _ => return Err(format!("unsupported pickle opcode 0x{op:02x} at byte {at}")),
        }
    }
}

fn short_bytes(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() < 256 {
        out.push(b'U');
        out.push(s.len() as u8);
    } else {
        out.push(b'T');
        out.extend((s.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(s);
}

fn int(out: &mut Vec<u8>, v: i64) {
    if (0..256).contains(&v) {
        out.extend([b'K', v as u8]);
    } else if (0..65536).contains(&v) {
        out.push(b'M');
        out.extend((v as u16).to_le_bytes());
    } else {
        out.push(b'J');
        out.extend((v as i32).to_le_bytes());
    }
}

/// A pickle in the form of the real CIFAR batches (Python 2 cPickle, protocol 2): a dict of
/// `str -> int list | str list | str | uint8 ndarray` entries, the array rebuilt via numpy `_reconstruct`.
pub enum FixtureValue<'a> {
    Ints(&'a [i64]),
    Strs(&'a [&'a str]),
    Str(&'a str),
    U8Array(&'a [usize], &'a [u8]),
}

pub fn write_dict(entries: &[(&str, FixtureValue)]) -> Vec<u8> {
    let mut o = vec![0x80, 2, b'}', b'('];
    for (k, v) in entries {
        short_bytes(&mut o, k.as_bytes());
        match v {
            FixtureValue::Ints(xs) => {
                o.extend([b']', b'(']);
                for &x in xs.iter() {
                    int(&mut o, x);
                }
                o.push(b'e');
            }
            FixtureValue::Strs(xs) => {
                o.extend([b']', b'(']);
                for x in xs.iter() {
                    short_bytes(&mut o, x.as_bytes());
                }
                o.push(b'e');
            }
            FixtureValue::Str(s) => short_bytes(&mut o, s.as_bytes()),
            FixtureValue::U8Array(shape, data) => {
                o.extend(b"cnumpy.core.multiarray\n_reconstruct\n");
                o.extend(b"cnumpy\nndarray\n");
                int(&mut o, 0);
                o.push(0x85);
                short_bytes(&mut o, b"b");
                o.extend([0x87, b'R']);
                // state: (1, shape, dtype('u1'), False, raw)
                o.push(b'(');
                int(&mut o, 1);
                o.push(b'(');
                for &d in shape.iter() {
                    int(&mut o, d as i64);
                }
                o.push(b't');
                o.extend(b"cnumpy\ndtype\n");
                short_bytes(&mut o, b"u1");
                int(&mut o, 0);
                int(&mut o, 1);
                o.extend([0x87, b'R']);
                o.push(b'(');
                int(&mut o, 3);
                short_bytes(&mut o, b"|");
                o.extend([b'N', b'N', b'N']);
                o.extend([b'J']);
                o.extend((-1i32).to_le_bytes());
                o.extend([b'J']);
                o.extend((-1i32).to_le_bytes());
                int(&mut o, 0);
                o.extend([b't', b'b']);
                o.push(0x89);
                short_bytes(&mut o, data);
                o.extend([b't', b'b']);
            }
        }
    }
    o.extend([b'u', b'.']);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cifar_like_round_trip() {
        let data: Vec<u8> = (0..2 * 3072).map(|i| (i % 251) as u8).collect();
        let bytes = write_dict(&[
            ("batch_label", FixtureValue::Str("training batch 1 of 5")),
            ("labels", FixtureValue::Ints(&[3, 300])),
            ("data", FixtureValue::U8Array(&[2, 3072], &data)),
            ("filenames", FixtureValue::Strs(&["a.png", "b.png"])),
        ]);
        let v = parse(&bytes).unwrap();
        assert_eq!(
            v.get("labels").unwrap().as_int_list().unwrap(),
            vec![3, 300]
        );
        let (shape, raw) = v.get("data").unwrap().as_u8_array().unwrap();
        assert_eq!(shape, vec![2, 3072]);
        assert_eq!(raw, data);
        assert_eq!(
            v.get("filenames").unwrap().as_str_list().unwrap(),
            vec!["a.png", "b.png"]
        );
    }

    #[test]
    fn rejects_unknown_opcodes() {
        assert!(parse(b"\x80\x02\xff.").unwrap_err().contains("0xff"));
    }
}
