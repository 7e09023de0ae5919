//! A restricted Python pickle machine. Nothing is ever imported or called: every global a pickle names is
//! checked against a [`Policy`] at the opcode that names it and refused there (with its byte offset) unless
//! the policy accepts it, and an accepted global only ever becomes data — a dict, a list, a byte string, or
//! a record of the call (`function`, `args`, BUILD state) for the caller to interpret.
//!
//! Objects live in one arena and are referred to by index, so memo references share instead of copying
//! (no exponential blow-up from repeated `BINGET`s), later mutations through the memo are seen as Python
//! would see them, and nothing is recursive (no stack overflow from deeply nested input).
//!
//! Also a writer of the CIFAR "python version" batch form, for test fixtures.
use std::collections::HashMap;

/// A value on the stack or inside a container: scalars inline, everything else an arena index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Obj(u32),
}

/// A module-qualified name, never resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    pub module: String,
    pub name: String,
}

impl std::fmt::Display for Global {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.module, self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Str(String),
    /// Python 3 `bytes`, or a Python 2 `str` (SHORT_BINSTRING/BINSTRING).
    Bytes(Vec<u8>),
    /// An integer that does not fit 64 bits, as little-endian two's complement bytes.
    BigInt(Vec<u8>),
    List(Vec<Val>),
    Tuple(Vec<Val>),
    /// Insertion-ordered items. `state_is_items`: a later BUILD adds its dict state as items
    /// (`argparse.Namespace`); otherwise BUILD state on a dict (an OrderedDict's `_metadata`) is dropped.
    Dict {
        items: Vec<(Val, Val)>,
        state_is_items: bool,
    },
    /// A global used as a value (a class as a dict key, a storage type inside a persistent id).
    Global(Global),
    /// `function(*args)` of an accepted [`Accept::Record`] global, never executed, plus its BUILD state.
    Call {
        function: Global,
        args: Val,
        state: Option<Val>,
    },
    /// A persistent id (PyTorch's storage references).
    Persistent(Val),
}

/// What an accepted global may become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Called (REDUCE/NEWOBJ), it becomes a dict: `OrderedDict`, dict subclasses such as Lightning's
    /// `AttributeDict`; with `state_is_items`, BUILD state becomes items (`argparse.Namespace`).
    Dict { state_is_items: bool },
    /// `set(list)` / `frozenset(list)`, read as a list.
    Set,
    /// `_codecs.encode(text, 'latin1')`: how protocol 2 spells a Python 3 `bytes` object.
    Latin1Bytes,
    /// Kept as an inert [`Object::Call`] record for the caller to interpret or ignore.
    Record,
    /// A name only: calling it is refused.
    Name,
}

/// Decides which globals a pickle may name.
pub trait Policy {
    fn accept(&self, module: &str, name: &str) -> Option<Accept>;
    /// Whether persistent ids (PERSID/BINPERSID) may occur.
    fn persistent_ids(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickleError {
    #[error("the data ends at byte {0} inside a pickle (truncated file?)")]
    Truncated(usize),
    #[error(
        "refused global `{global}` at byte {offset}: checkpoints do not contain it, so the file is not \
         read (nothing in it was run)"
    )]
    Refused { global: Global, offset: usize },
    #[error("global `{global}` is called at byte {offset}, but it is only accepted as a name")]
    NotCallable { global: Global, offset: usize },
    #[error("unsupported pickle opcode 0x{op:02x} at byte {offset}")]
    Opcode { op: u8, offset: usize },
    #[error("malformed pickle at byte {offset}: {msg}")]
    Malformed { offset: usize, msg: String },
}

/// A parsed pickle: the object arena, the root value and the offset just past its STOP opcode.
#[derive(Debug, Clone)]
pub struct Pickle {
    objects: Vec<Object>,
    pub root: Val,
    pub end: usize,
}

impl Pickle {
    pub fn object(&self, v: Val) -> Option<&Object> {
        match v {
            Val::Obj(i) => self.objects.get(i as usize),
            _ => None,
        }
    }

    /// Number of objects in the arena; `Val::Obj(i)` for `i` below it are valid.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// A `str`, or `bytes` that are UTF-8 (Python 2 strings).
    pub fn str(&self, v: Val) -> Option<&str> {
        match self.object(v)? {
            Object::Str(s) => Some(s),
            Object::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    pub fn int(&self, v: Val) -> Option<i64> {
        match v {
            Val::Int(i) => Some(i),
            Val::Bool(b) => Some(b as i64),
            _ => None,
        }
    }

    /// Items of a list or tuple.
    pub fn seq(&self, v: Val) -> Option<&[Val]> {
        match self.object(v)? {
            Object::List(x) | Object::Tuple(x) => Some(x),
            _ => None,
        }
    }

    pub fn dict(&self, v: Val) -> Option<&[(Val, Val)]> {
        match self.object(v)? {
            Object::Dict { items, .. } => Some(items),
            _ => None,
        }
    }

    /// The value of a string key in a dict (the last one, as Python's dict keeps the last assignment).
    pub fn get(&self, dict: Val, key: &str) -> Option<Val> {
        self.dict(dict)?
            .iter()
            .rev()
            .find(|(k, _)| self.str(*k) == Some(key))
            .map(|(_, v)| *v)
    }

    pub fn global(&self, v: Val) -> Option<&Global> {
        match self.object(v)? {
            Object::Global(g) => Some(g),
            _ => None,
        }
    }

    /// The ids of every persistent reference in the pickle, in the order they were read.
    pub fn persistent_ids(&self) -> impl Iterator<Item = Val> + '_ {
        self.objects.iter().filter_map(|o| match o {
            Object::Persistent(id) => Some(*id),
            _ => None,
        })
    }

    /// A cursor at the root, for lookups by key.
    pub fn root(&self) -> Node<'_> {
        Node {
            pickle: self,
            val: self.root,
        }
    }
}

/// A value with its pickle, for chained lookups.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub pickle: &'a Pickle,
    pub val: Val,
}

impl<'a> Node<'a> {
    pub fn get(&self, key: &str) -> Option<Node<'a>> {
        Some(Node {
            pickle: self.pickle,
            val: self.pickle.get(self.val, key)?,
        })
    }

    pub fn as_str(&self) -> Option<&'a str> {
        self.pickle.str(self.val)
    }

    pub fn as_int_list(&self) -> Option<Vec<i64>> {
        self.pickle
            .seq(self.val)?
            .iter()
            .map(|v| match v {
                Val::Int(i) => Some(*i),
                _ => None,
            })
            .collect()
    }

    pub fn as_str_list(&self) -> Option<Vec<String>> {
        self.pickle
            .seq(self.val)?
            .iter()
            .map(|v| self.pickle.str(*v).map(str::to_string))
            .collect()
    }

    /// A uint8 numpy array rebuilt by `_reconstruct` + BUILD: (shape, raw bytes).
    pub fn as_u8_array(&self) -> Option<(Vec<usize>, Vec<u8>)> {
        let p = self.pickle;
        let Object::Call {
            function,
            state: Some(state),
            ..
        } = p.object(self.val)?
        else {
            return None;
        };
        if !(function.module.starts_with("numpy") && function.name == "_reconstruct") {
            return None;
        }
        // state = (version, shape, dtype, is_fortran, rawdata)
        let st = p.seq(*state)?;
        let shape: Vec<usize> = Node {
            pickle: p,
            val: *st.get(1)?,
        }
        .as_int_list()?
        .into_iter()
        .map(|x| usize::try_from(x).ok())
        .collect::<Option<_>>()?;
        let raw = match p.object(*st.get(4)?)? {
            Object::Bytes(b) => b.clone(),
            Object::Str(s) => s.chars().map(|c| c as u32 as u8).collect(),
            _ => return None,
        };
        // The dtype must be one byte per element (uint8).
        let Object::Call { function, args, .. } = p.object(*st.get(2)?)? else {
            return None;
        };
        let first = p.seq(*args)?.first().and_then(|a| p.str(*a));
        if function.name != "dtype" || first != Some("u1") {
            return None;
        }
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        (n == raw.len()).then_some((shape, raw))
    }
}

/// numpy arrays as the CIFAR batches hold them; anything else is refused.
struct NumpyArrays;

impl Policy for NumpyArrays {
    fn accept(&self, module: &str, name: &str) -> Option<Accept> {
        match (module, name) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                Some(Accept::Record)
            }
            ("numpy", "dtype") => Some(Accept::Record),
            ("numpy", "ndarray") => Some(Accept::Name),
            _ => None,
        }
    }
}

/// Parse a pickle of plain data and numpy arrays (the CIFAR batches).
pub fn parse(b: &[u8]) -> Result<Pickle, PickleError> {
    parse_with(b, &NumpyArrays)
}

/// Parse one pickle starting at the beginning of `b`, refusing every global `policy` does not accept.
pub fn parse_with(b: &[u8], policy: &dyn Policy) -> Result<Pickle, PickleError> {
    Machine {
        b,
        p: 0,
        policy,
        objects: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        kinds: HashMap::new(),
    }
    .run()
}

struct Machine<'a> {
    b: &'a [u8],
    p: usize,
    policy: &'a dyn Policy,
    objects: Vec<Object>,
    stack: Vec<Val>,
    marks: Vec<usize>,
    memo: HashMap<u32, Val>,
    /// How each accepted global object may be called.
    kinds: HashMap<u32, Accept>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let b: &'a [u8] = self.b;
        let end = self
            .p
            .checked_add(n)
            .filter(|&e| e <= b.len())
            .ok_or(PickleError::Truncated(b.len()))?;
        let s = &b[self.p..end];
        self.p = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }

    fn len_u64(&mut self) -> Result<usize, PickleError> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| PickleError::Truncated(self.b.len()))
    }

    /// A text line without its newline (protocol 0 arguments and GLOBAL names).
    fn line(&mut self) -> Result<&'a str, PickleError> {
        let b: &'a [u8] = self.b;
        let start = self.p;
        let len = b[start..]
            .iter()
            .position(|&c| c == b'\n')
            .ok_or(PickleError::Truncated(b.len()))?;
        self.p = start + len + 1;
        std::str::from_utf8(&b[start..start + len])
            .map_err(|_| self.malformed(start, "non-UTF-8 text"))
    }

    fn malformed(&self, offset: usize, msg: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            offset,
            msg: msg.into(),
        }
    }

    fn alloc(&mut self, o: Object) -> Val {
        self.objects.push(o);
        Val::Obj((self.objects.len() - 1) as u32)
    }

    fn push_obj(&mut self, o: Object) {
        let v = self.alloc(o);
        self.stack.push(v);
    }

    fn pop(&mut self, at: usize) -> Result<Val, PickleError> {
        self.stack
            .pop()
            .ok_or_else(|| self.malformed(at, "stack underflow"))
    }

    /// The items pushed since the last MARK.
    fn pop_mark(&mut self, at: usize) -> Result<Vec<Val>, PickleError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.malformed(at, "no MARK"))?;
        if m > self.stack.len() {
            return Err(self.malformed(at, "MARK above the stack"));
        }
        Ok(self.stack.split_off(m))
    }

    fn top_obj(&mut self, at: usize) -> Result<&mut Object, PickleError> {
        match self.stack.last() {
            Some(Val::Obj(i)) => Ok(&mut self.objects[*i as usize]),
            _ => Err(self.malformed(at, "expected an object on the stack")),
        }
    }

    fn str_val(&mut self, bytes: &[u8], at: usize) -> Result<(), PickleError> {
        let s =
            std::str::from_utf8(bytes).map_err(|_| self.malformed(at, "string is not UTF-8"))?;
        self.push_obj(Object::Str(s.to_string()));
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str, at: usize) -> Result<(), PickleError> {
        let global = Global {
            module: module.to_string(),
            name: name.to_string(),
        };
        let kind = self
            .policy
            .accept(module, name)
            .ok_or(PickleError::Refused {
                global: global.clone(),
                offset: at,
            })?;
        let v = self.alloc(Object::Global(global));
        if let Val::Obj(i) = v {
            self.kinds.insert(i, kind);
        }
        self.stack.push(v);
        Ok(())
    }

    fn memo_put(&mut self, key: u32, at: usize) -> Result<(), PickleError> {
        let v = *self
            .stack
            .last()
            .ok_or_else(|| self.malformed(at, "memo store from an empty stack"))?;
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u32, at: usize) -> Result<(), PickleError> {
        let v = *self
            .memo
            .get(&key)
            .ok_or_else(|| self.malformed(at, format!("memo key {key} was never stored")))?;
        self.stack.push(v);
        Ok(())
    }

    /// `callable(*args)` for REDUCE, NEWOBJ, NEWOBJ_EX, INST and OBJ.
    fn call(&mut self, callable: Val, args: Val, at: usize) -> Result<(), PickleError> {
        let callable = self.module_class(callable).unwrap_or(callable);
        let Val::Obj(ci) = callable else {
            return Err(self.malformed(at, "call of a non-global"));
        };
        let (Some(Object::Global(g)), Some(kind)) =
            (self.objects.get(ci as usize), self.kinds.get(&ci))
        else {
            return Err(self.malformed(at, "call of a non-global"));
        };
        let (g, kind) = (g.clone(), *kind);
        let arg_items: Vec<Val> = match self.objects.get(match args {
            Val::Obj(i) => i as usize,
            _ => usize::MAX,
        }) {
            Some(Object::Tuple(t)) | Some(Object::List(t)) => t.clone(),
            _ => return Err(self.malformed(at, format!("arguments of `{g}` are not a tuple"))),
        };
        let made = match kind {
            Accept::Name => {
                return Err(PickleError::NotCallable {
                    global: g,
                    offset: at,
                })
            }
            Accept::Record => Object::Call {
                function: g,
                args,
                state: None,
            },
            Accept::Dict { state_is_items } => {
                // OrderedDict() or OrderedDict([(k, v), ...]); dict subclasses are made empty and filled
                // by SETITEMS.
                let mut items = Vec::new();
                if let Some(first) = arg_items.first() {
                    let pairs = self
                        .seq_of(*first)
                        .ok_or_else(|| self.malformed(at, format!("`{g}` of a non-sequence")))?;
                    for pair in pairs {
                        match self.seq_of(pair).as_deref() {
                            Some([k, v]) => items.push((*k, *v)),
                            _ => {
                                return Err(self.malformed(at, format!("`{g}` item is not a pair")))
                            }
                        }
                    }
                }
                Object::Dict {
                    items,
                    state_is_items,
                }
            }
            Accept::Set => match arg_items.first() {
                None => Object::List(Vec::new()),
                Some(v) => Object::List(
                    self.seq_of(*v)
                        .ok_or_else(|| self.malformed(at, format!("`{g}` of a non-sequence")))?,
                ),
            },
            Accept::Latin1Bytes => {
                let text = arg_items
                    .first()
                    .and_then(|v| match self.objects.get(obj_index(*v)?) {
                        Some(Object::Str(s)) => Some(s.clone()),
                        _ => None,
                    });
                let enc = arg_items
                    .get(1)
                    .and_then(|v| match self.objects.get(obj_index(*v)?) {
                        Some(Object::Str(s)) => Some(s.clone()),
                        _ => None,
                    });
                match (text, enc.as_deref()) {
                    (Some(t), Some("latin1" | "latin-1"))
                        if t.chars().all(|c| (c as u32) < 256) =>
                    {
                        Object::Bytes(t.chars().map(|c| c as u32 as u8).collect())
                    }
                    (Some(t), None) if t.is_ascii() => Object::Bytes(t.into_bytes()),
                    _ => {
                        return Err(self
                            .malformed(at, format!("`{g}` is only accepted as (text, 'latin1')")))
                    }
                }
            }
        };
        self.push_obj(made);
        Ok(())
    }

    /// PyTorch's legacy format names the class of a pickled `nn.Module` by a persistent id
    /// `('module', class, source_file, source)`; the class inside is a global like any other.
    fn module_class(&self, v: Val) -> Option<Val> {
        let Object::Persistent(id) = self.objects.get(obj_index(v)?)? else {
            return None;
        };
        let t = self.seq_of(*id)?;
        let is_module = matches!(
            self.objects.get(obj_index(*t.first()?)?),
            Some(Object::Str(s)) if s == "module"
        );
        let class = *t.get(1)?;
        (is_module && matches!(self.objects.get(obj_index(class)?), Some(Object::Global(_))))
            .then_some(class)
    }

    /// Items of a list or tuple, copied (Val is a handle).
    fn seq_of(&self, v: Val) -> Option<Vec<Val>> {
        match self.objects.get(obj_index(v)?)? {
            Object::List(x) | Object::Tuple(x) => Some(x.clone()),
            _ => None,
        }
    }

    fn build(&mut self, at: usize) -> Result<(), PickleError> {
        let state = self.pop(at)?;
        let state_items = self
            .objects
            .get(obj_index(state).unwrap_or(usize::MAX))
            .and_then(|o| match o {
                Object::Dict { items, .. } => Some(items.clone()),
                _ => None,
            });
        match self.top_obj(at)? {
            Object::Call { state: s, .. } if s.is_none() => *s = Some(state),
            Object::Dict {
                items,
                state_is_items,
            } => {
                if *state_is_items {
                    items.extend(state_items.unwrap_or_default());
                }
            }
            _ => return Err(self.malformed(at, "BUILD on an object that takes no state")),
        }
        Ok(())
    }

    fn set_items(&mut self, kv: Vec<Val>, at: usize) -> Result<(), PickleError> {
        if !kv.len().is_multiple_of(2) {
            return Err(self.malformed(at, "odd number of dict items"));
        }
        match self.top_obj(at)? {
            Object::Dict { items, .. } => {
                items.extend(kv.chunks_exact(2).map(|c| (c[0], c[1])));
                Ok(())
            }
            _ => Err(self.malformed(at, "SETITEM(S) on a non-dict")),
        }
    }

    fn append(&mut self, vs: Vec<Val>, at: usize) -> Result<(), PickleError> {
        match self.top_obj(at)? {
            Object::List(l) => {
                l.extend(vs);
                Ok(())
            }
            _ => Err(self.malformed(at, "APPEND(S)/ADDITEMS on a non-list")),
        }
    }

    fn long_bytes(&mut self, s: &[u8]) {
        if s.len() <= 8 {
            let mut v: i64 = 0;
            for (i, &x) in s.iter().enumerate() {
                v |= (x as i64) << (8 * i);
            }
            if !s.is_empty() && s.len() < 8 && s[s.len() - 1] & 0x80 != 0 {
                v -= 1i64 << (8 * s.len());
            }
            self.stack.push(Val::Int(v));
        } else {
            self.push_obj(Object::BigInt(s.to_vec()));
        }
    }

    fn run(mut self) -> Result<Pickle, PickleError> {
        loop {
            let at = self.p;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(self.malformed(at, format!("unknown protocol {proto}")));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => {
                    let root = self.pop(at)?;
                    return Ok(Pickle {
                        objects: self.objects,
                        root,
                        end: self.p,
                    });
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop(at)?;
                }
                b'1' => {
                    self.pop_mark(at)?;
                }
                b'2' => {
                    let v = *self
                        .stack
                        .last()
                        .ok_or_else(|| self.malformed(at, "DUP of an empty stack"))?;
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Val::None),
                0x88 => self.stack.push(Val::Bool(true)),
                0x89 => self.stack.push(Val::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Val::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Val::Int(v as i64))
                }
                b'J' => {
                    let v = self.u32()?;
                    self.stack.push(Val::Int(v as i32 as i64))
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let s = self.take(n)?;
                    self.long_bytes(s);
                }
                0x8b => {
                    let n = self.u32()? as i32;
                    let n = usize::try_from(n)
                        .map_err(|_| self.malformed(at, "negative LONG4 size"))?;
                    let s = self.take(n)?;
                    self.long_bytes(s);
                }
                b'I' => {
                    let l = self.line()?;
                    let v = match l {
                        "00" => Val::Bool(false),
                        "01" => Val::Bool(true),
                        s => Val::Int(
                            s.trim()
                                .parse()
                                .map_err(|_| self.malformed(at, "bad INT"))?,
                        ),
                    };
                    self.stack.push(v);
                }
                b'L' => {
                    let l = self.line()?;
                    let v = l
                        .trim()
                        .trim_end_matches('L')
                        .parse()
                        .map_err(|_| self.malformed(at, "LONG out of the 64-bit range"))?;
                    self.stack.push(Val::Int(v));
                }
                b'F' => {
                    let l = self.line()?;
                    let v = l
                        .trim()
                        .parse()
                        .map_err(|_| self.malformed(at, "bad FLOAT"))?;
                    self.stack.push(Val::Float(v));
                }
                b'G' => {
                    let s = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(s);
                    self.stack.push(Val::Float(f64::from_be_bytes(a)));
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let s = self.take(n)?.to_vec();
                    self.push_obj(Object::Bytes(s));
                }
                b'T' => {
                    let n = self.u32()? as i32;
                    let n = usize::try_from(n)
                        .map_err(|_| self.malformed(at, "negative BINSTRING size"))?;
                    let s = self.take(n)?.to_vec();
                    self.push_obj(Object::Bytes(s));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let s = self.take(n)?.to_vec();
                    self.push_obj(Object::Bytes(s));
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let s = self.take(n)?.to_vec();
                    self.push_obj(Object::Bytes(s));
                }
                0x8e | 0x96 => {
                    let n = self.len_u64()?;
                    let s = self.take(n)?.to_vec();
                    self.push_obj(Object::Bytes(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.take(n)?;
                    self.str_val(s, at)?;
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.take(n)?;
                    self.str_val(s, at)?;
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let s = self.take(n)?;
                    self.str_val(s, at)?;
                }
                b']' => self.push_obj(Object::List(Vec::new())),
                b')' => self.push_obj(Object::Tuple(Vec::new())),
                b'}' => self.push_obj(Object::Dict {
                    items: Vec::new(),
                    state_is_items: false,
                }),
                0x8f => self.push_obj(Object::List(Vec::new())), // EMPTY_SET, read as a list
                b'l' => {
                    let items = self.pop_mark(at)?;
                    self.push_obj(Object::List(items));
                }
                b't' => {
                    let items = self.pop_mark(at)?;
                    self.push_obj(Object::Tuple(items));
                }
                0x91 => {
                    let items = self.pop_mark(at)?;
                    self.push_obj(Object::List(items)); // FROZENSET
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(self.malformed(at, "stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_obj(Object::Tuple(items));
                }
                b'd' => {
                    let items = self.pop_mark(at)?;
                    if !items.len().is_multiple_of(2) {
                        return Err(self.malformed(at, "odd number of dict items"));
                    }
                    let items = items.chunks_exact(2).map(|c| (c[0], c[1])).collect();
                    self.push_obj(Object::Dict {
                        items,
                        state_is_items: false,
                    });
                }
                b'a' => {
                    let v = self.pop(at)?;
                    self.append(vec![v], at)?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark(at)?;
                    self.append(items, at)?;
                }
                b's' => {
                    let v = self.pop(at)?;
                    let k = self.pop(at)?;
                    self.set_items(vec![k, v], at)?;
                }
                b'u' => {
                    let items = self.pop_mark(at)?;
                    self.set_items(items, at)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name, at)?;
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    let as_string = |v: Val| match self.objects.get(obj_index(v)?) {
                        Some(Object::Str(s)) => Some(s.clone()),
                        _ => None,
                    };
                    let (Some(m), Some(n)) = (as_string(module), as_string(name)) else {
                        return Err(self.malformed(at, "STACK_GLOBAL of non-strings"));
                    };
                    self.global(&m, &n, at)?;
                }
                b'R' => {
                    let args = self.pop(at)?;
                    let f = self.pop(at)?;
                    self.call(f, args, at)?;
                }
                0x81 => {
                    // NEWOBJ: cls.__new__(cls, *args)
                    let args = self.pop(at)?;
                    let cls = self.pop(at)?;
                    self.call(cls, args, at)?;
                }
                0x92 => {
                    // NEWOBJ_EX: keyword arguments are not part of any checkpoint
                    let kwargs = self.pop(at)?;
                    let args = self.pop(at)?;
                    let cls = self.pop(at)?;
                    if self.objects.get(obj_index(kwargs).unwrap_or(usize::MAX))
                        != Some(&Object::Dict {
                            items: Vec::new(),
                            state_is_items: false,
                        })
                    {
                        return Err(self.malformed(at, "NEWOBJ_EX with keyword arguments"));
                    }
                    self.call(cls, args, at)?;
                }
                b'i' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let items = self.pop_mark(at)?;
                    self.global(module, name, at)?;
                    let cls = self.pop(at)?;
                    let args = self.alloc(Object::Tuple(items));
                    self.call(cls, args, at)?;
                }
                b'o' => {
                    let mut items = self.pop_mark(at)?;
                    if items.is_empty() {
                        return Err(self.malformed(at, "OBJ without a class"));
                    }
                    let cls = items.remove(0);
                    let args = self.alloc(Object::Tuple(items));
                    self.call(cls, args, at)?;
                }
                b'b' => self.build(at)?,
                b'P' | b'Q' => {
                    if !self.policy.persistent_ids() {
                        return Err(self.malformed(at, "persistent id in a pickle that takes none"));
                    }
                    let id = if op == b'P' {
                        let l = self.line()?.to_string();
                        self.alloc(Object::Str(l))
                    } else {
                        self.pop(at)?
                    };
                    self.push_obj(Object::Persistent(id));
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k, at)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k, at)?;
                }
                b'p' => {
                    let k = self.line()?;
                    let k = k
                        .trim()
                        .parse()
                        .map_err(|_| self.malformed(at, "bad PUT index"))?;
                    self.memo_put(k, at)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k, at)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k, at)?;
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k, at)?;
                }
                b'g' => {
                    let k = self.line()?;
                    let k = k
                        .trim()
                        .parse()
                        .map_err(|_| self.malformed(at, "bad GET index"))?;
                    self.memo_get(k, at)?;
                }
                _ => return Err(PickleError::Opcode { op, offset: at }),
            }
        }
    }
}

fn obj_index(v: Val) -> Option<usize> {
    match v {
        Val::Obj(i) => Some(i as usize),
        _ => None,
    }
}

/// A numpy array element type the writer emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumpyDtype {
    F64,
    F32,
    F16,
    I64,
    I32,
    U8,
    Bool,
}

impl NumpyDtype {
    /// numpy's type string and byte order as `dtype.__reduce__` gives them.
    fn descr(self) -> (&'static str, &'static str) {
        match self {
            NumpyDtype::F64 => ("f8", "<"),
            NumpyDtype::F32 => ("f4", "<"),
            NumpyDtype::F16 => ("f2", "<"),
            NumpyDtype::I64 => ("i8", "<"),
            NumpyDtype::I32 => ("i4", "<"),
            NumpyDtype::U8 => ("u1", "|"),
            NumpyDtype::Bool => ("b1", "|"),
        }
    }
}

/// A protocol-3 pickle writer for plain data and numpy arrays, emitting what Python 3's `pickle.dump`
/// writes for them (without memoization, which only saves space): readable by any Python 3 and by numpy
/// 1.x and 2.x (arrays are rebuilt with `numpy.core.multiarray._reconstruct`, the name numpy 1.x pickles
/// carry and numpy 2 still maps).
pub struct Writer {
    out: Vec<u8>,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    pub fn new() -> Self {
        Self { out: vec![0x80, 3] }
    }

    /// Ends the pickle and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b'.');
        self.out
    }

    pub fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend((s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    pub fn bytes(&mut self, b: &[u8]) {
        if b.len() < 256 {
            self.out.extend([b'C', b.len() as u8]);
        } else {
            self.out.push(b'B');
            self.out.extend((b.len() as u32).to_le_bytes());
        }
        self.out.extend_from_slice(b);
    }

    pub fn bool(&mut self, v: bool) {
        self.out.push(if v { 0x88 } else { 0x89 });
    }

    pub fn int(&mut self, v: i64) {
        if let Ok(v) = i32::try_from(v) {
            int(&mut self.out, v as i64);
        } else {
            self.out.extend([0x8a, 8]);
            self.out.extend(v.to_le_bytes());
        }
    }

    pub fn none(&mut self) {
        self.out.push(b'N');
    }

    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    /// Starts a dict; follow with `dict_item` pairs (key, then value) and `end_dict`.
    pub fn begin_dict(&mut self) {
        self.out.extend([b'}', b'(']);
    }

    pub fn end_dict(&mut self) {
        self.out.push(b'u');
    }

    /// A C-order numpy array of `dtype` with `shape` and raw little-endian `data`, as numpy's
    /// `ndarray.__reduce__`: `_reconstruct(ndarray, (0,), b'b')` + BUILD `(1, shape, dtype, False, data)`.
    pub fn ndarray(&mut self, dtype: NumpyDtype, shape: &[usize], data: &[u8]) {
        self.global("numpy.core.multiarray", "_reconstruct");
        self.global("numpy", "ndarray");
        self.int(0);
        self.out.push(0x85);
        self.bytes(b"b");
        self.out.extend([0x87, b'R']);
        self.out.push(b'(');
        self.int(1);
        self.out.push(b'(');
        for &d in shape {
            self.int(d as i64);
        }
        self.out.push(b't');
        // numpy.dtype('<f4') pickles as dtype('f4', False, True) + BUILD (3, '<', None, None, None, -1, -1, 0).
        let (code, order) = dtype.descr();
        self.global("numpy", "dtype");
        self.str(code);
        self.bool(false);
        self.bool(true);
        self.out.extend([0x87, b'R']);
        self.out.push(b'(');
        self.int(3);
        self.str(order);
        self.none();
        self.none();
        self.none();
        self.int(-1);
        self.int(-1);
        self.int(0);
        self.out.extend([b't', b'b']);
        self.bool(false);
        self.bytes(data);
        self.out.extend([b't', b'b']);
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
        let p = parse(&bytes).unwrap();
        let v = p.root();
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
        assert_eq!(p.end, bytes.len());
    }

    #[test]
    fn rejects_unknown_opcodes() {
        assert_eq!(
            parse(b"\x80\x02\xff.").unwrap_err(),
            PickleError::Opcode {
                op: 0xff,
                offset: 2
            }
        );
    }

    #[test]
    fn refuses_globals_outside_the_policy_at_their_opcode() {
        // pickle.dumps of an object whose __reduce__ is (os.system, ('echo hi',)), protocol 2.
        let b = b"\x80\x02cposix\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.";
        match parse(b).unwrap_err() {
            PickleError::Refused { global, offset } => {
                assert_eq!(global.to_string(), "posix.system");
                assert_eq!(offset, 2);
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn names_are_not_callable() {
        let b = b"\x80\x02cnumpy\nndarray\n)R.";
        assert!(matches!(parse(b), Err(PickleError::NotCallable { .. })));
    }

    #[test]
    fn memo_shares_objects_and_sees_later_mutation() {
        // d = {}; l = [d, d]; then d['k'] = 1 through the memo, as pickle writes shared objects.
        let b = b"\x80\x02}q\x00](h\x00h\x00eq\x010h\x00X\x01\x00\x00\x00kK\x01s0h\x01.";
        let p = parse(b).unwrap();
        let items = p.seq(p.root).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0], items[1]);
        assert_eq!(p.get(items[0], "k"), Some(Val::Int(1)));
        // SETITEM onto a list is malformed, not a panic.
        let b = b"\x80\x02]q\x00X\x01\x00\x00\x00kK\x01s.";
        assert!(matches!(parse(b), Err(PickleError::Malformed { .. })));
    }

    #[test]
    fn repeated_memo_gets_do_not_copy() {
        // A list holding itself 2^k times over would be exponential if memo gets copied.
        let mut b = b"\x80\x02]q\x00".to_vec();
        for _ in 0..40 {
            b.extend(b"(h\x00h\x00lq\x00");
        }
        b.push(b'.');
        let p = parse(&b).unwrap();
        assert_eq!(p.seq(p.root).unwrap().len(), 2);
    }
}
