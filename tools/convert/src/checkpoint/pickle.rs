//! A bounded pickle machine for the subset of pickle (protocol 2) that `torch.save` writes for a
//! state dict.
//!
//! Opcode semantics follow CPython's `Lib/pickle.py` (`_Unpickler.load_*`) and
//! `Lib/pickletools.py`; the torch-specific parts follow `torch/serialization.py`
//! (`_save`'s `persistent_id`) and `torch/_utils.py` (`_rebuild_tensor_v2`). Nothing is ever
//! executed: the only globals recognised are `collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter` and the storage types
//! `torch.FloatStorage`, `torch.HalfStorage`, `torch.BFloat16Storage`; any other is an error.
//!
//! Containers are shared copy-on-write (`Rc` + `make_mut`), so fetching a memoized object is
//! O(1) and a mutated container never changes a copy fetched earlier; that differs from Python
//! only for files that mutate an object after memoizing it and fetch it again, which
//! `torch.save` never does. Everything is bounded: stack size, MARK nesting, memo size, string
//! length, object nesting depth, and the total number of elements copied by copy-on-write.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::DType;

/// Most values on the stack at once.
const MAX_STACK: usize = 1 << 16;
/// Most open MARKs at once.
const MAX_MARKS: usize = 1 << 12;
/// Most memo entries.
const MAX_MEMO: usize = 1 << 20;
/// Longest string, in bytes.
const MAX_STRING: usize = 1 << 20;
/// Deepest nesting of containers.
const MAX_DEPTH: usize = 32;
/// Most tensor dimensions.
const MAX_DIMS: usize = 16;
/// Most container elements copied by copy-on-write over a whole run.
const MAX_COPIED: usize = 1 << 24;
/// Longest module or name line of a GLOBAL opcode.
const MAX_LINE: usize = 256;

/// The storage a tensor views: `<stem>/data/<key>` in the zip archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StorageRef {
    /// Element type of the storage.
    pub dtype: DType,
    /// Storage key (the file name under `<stem>/data/`).
    pub key: String,
    /// Number of elements of the storage.
    pub numel: u64,
}

/// One entry of the unpickled state dict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PickledTensor {
    /// State-dict key.
    pub name: String,
    /// The storage it views.
    pub storage: StorageRef,
    /// Storage element of tensor element `[0, 0, ..]`.
    pub offset: u64,
    /// Shape.
    pub shape: Vec<usize>,
    /// Element strides.
    pub strides: Vec<usize>,
}

/// Why a pickle was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PickleError {
    /// Malformed, or outside the supported subset, at byte `offset`.
    Malformed {
        /// Byte offset of the opcode that failed.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A global other than the allowed ones.
    ForbiddenGlobal {
        /// Module part.
        module: String,
        /// Name part.
        name: String,
    },
}

/// Unpickles `data` (the bytes of `data.pkl`) into the tensors of a state dict, in file order.
pub(crate) fn load_state_dict(data: &[u8]) -> Result<Vec<PickledTensor>, PickleError> {
    let mut machine = Machine {
        data,
        pos: 0,
        op_start: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        copied: 0,
    };
    let root = machine.run()?;
    into_state_dict(root, data.len())
}

/// The globals the machine knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(DType),
}

/// A tensor built by `_rebuild_tensor_v2`.
#[derive(Debug)]
struct TensorObj {
    storage: Rc<StorageRef>,
    offset: u64,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

/// A tuple or list.
#[derive(Clone, Debug, Default)]
struct Seq {
    items: Vec<Value>,
    /// Nesting depth (1 + the deepest item).
    depth: usize,
}

/// A dict (insertion-ordered pairs).
#[derive(Clone, Debug, Default)]
struct Dict {
    items: Vec<(Value, Value)>,
    /// Nesting depth (1 + the deepest key or value).
    depth: usize,
}

/// A value on the pickle stack. (Bool and float payloads are only shown by `Debug`.)
#[derive(Clone, Debug)]
#[allow(dead_code)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Tuple(Rc<Seq>),
    List(Rc<Seq>),
    Dict(Rc<Dict>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorObj>),
}

impl Value {
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(s) | Value::List(s) => s.depth,
            Value::Dict(d) => d.depth,
            _ => 0,
        }
    }

    /// A short name for error messages.
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// Nesting depth of a container holding `items`.
fn depth_of<'v>(items: impl IntoIterator<Item = &'v Value>) -> usize {
    1 + items.into_iter().map(Value::depth).max().unwrap_or(0)
}

/// The pickle machine state.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed (for errors).
    op_start: usize,
    stack: Vec<Value>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Container elements copied by copy-on-write so far.
    copied: usize,
}

impl Machine<'_> {
    fn err<T>(&self, reason: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError::Malformed {
            offset: self.op_start,
            reason: reason.into(),
        })
    }

    // ---- reading the opcode stream ----

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len());
        let Some(end) = end else {
            return self.err(format!(
                "truncated: {n} bytes wanted, {} left",
                self.data.len() - self.pos
            ));
        };
        let bytes = self.data.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, PickleError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn string(&mut self, len: u64) -> Result<Value, PickleError> {
        let len = match usize::try_from(len) {
            Ok(len) if len <= MAX_STRING => len,
            _ => return self.err(format!("string of {len} bytes exceeds {MAX_STRING}")),
        };
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Value::Str(Rc::from(s))),
            Err(e) => self.err(format!("string is not UTF-8: {e}")),
        }
    }

    /// A newline-terminated line (GLOBAL operands).
    fn line(&mut self) -> Result<String, PickleError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let Some(len) = rest.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') else {
            return self.err("GLOBAL operand is not a newline-terminated line");
        };
        let line = self.take(len)?.to_vec();
        self.take(1)?;
        match String::from_utf8(line) {
            Ok(s) => Ok(s),
            Err(_) => self.err("GLOBAL operand is not UTF-8"),
        }
    }

    // ---- the stack ----

    /// Stack length below which pops may not go (the innermost open MARK).
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, value: Value) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return self.err(format!("stack deeper than {MAX_STACK}"));
        }
        self.stack.push(value);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        if self.stack.len() <= self.floor() {
            return self.err("stack underflow");
        }
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn top(&self) -> Result<&Value, PickleError> {
        match self.stack.last() {
            Some(v) if self.stack.len() > self.floor() => Ok(v),
            _ => self.err("stack underflow"),
        }
    }

    /// The values pushed since the innermost MARK, which is closed.
    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        match self.marks.pop() {
            Some(mark) if mark <= self.stack.len() => Ok(self.stack.split_off(mark)),
            _ => self.err("no open MARK"),
        }
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>, PickleError> {
        if self.stack.len() < self.floor() + n {
            return self.err("stack underflow");
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn seq(&self, items: Vec<Value>) -> Result<Rc<Seq>, PickleError> {
        let depth = depth_of(&items);
        if depth > MAX_DEPTH {
            return self.err(format!("objects nested deeper than {MAX_DEPTH}"));
        }
        Ok(Rc::new(Seq { items, depth }))
    }

    /// Counts a copy-on-write copy of `len` elements when `shared`.
    fn count_copy(&mut self, shared: bool, len: usize) -> Result<(), PickleError> {
        if shared {
            self.copied = self.copied.saturating_add(len);
            if self.copied > MAX_COPIED {
                return self.err(format!("more than {MAX_COPIED} elements copied"));
            }
        }
        Ok(())
    }

    /// SETITEM / SETITEMS: adds pairs to the dict on top of the stack.
    fn dict_extend(&mut self, pairs: Vec<(Value, Value)>) -> Result<(), PickleError> {
        let depth = depth_of(pairs.iter().flat_map(|(k, v)| [k, v]));
        if depth > MAX_DEPTH {
            return self.err(format!("objects nested deeper than {MAX_DEPTH}"));
        }
        let (shared, len) = match self.top()? {
            Value::Dict(d) => (Rc::strong_count(d) > 1, d.items.len()),
            other => return self.err(format!("SETITEM(S) on type {}, not a dict", other.kind())),
        };
        self.count_copy(shared, len)?;
        if let Some(Value::Dict(d)) = self.stack.last_mut() {
            let d = Rc::make_mut(d);
            d.items.extend(pairs);
            d.depth = d.depth.max(depth);
        }
        Ok(())
    }

    /// APPEND / APPENDS: adds items to the list on top of the stack.
    fn list_extend(&mut self, items: Vec<Value>) -> Result<(), PickleError> {
        let depth = depth_of(&items);
        if depth > MAX_DEPTH {
            return self.err(format!("objects nested deeper than {MAX_DEPTH}"));
        }
        let (shared, len) = match self.top()? {
            Value::List(l) => (Rc::strong_count(l) > 1, l.items.len()),
            other => return self.err(format!("APPEND(S) on type {}, not a list", other.kind())),
        };
        self.count_copy(shared, len)?;
        if let Some(Value::List(l)) = self.stack.last_mut() {
            let l = Rc::make_mut(l);
            l.items.extend(items);
            l.depth = l.depth.max(depth);
        }
        Ok(())
    }

    fn memo_put(&mut self, key: u32) -> Result<(), PickleError> {
        let value = self.top()?.clone();
        if !self.memo.contains_key(&key) && self.memo.len() >= MAX_MEMO {
            return self.err(format!("more than {MAX_MEMO} memo entries"));
        }
        self.memo.insert(key, value);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), PickleError> {
        match self.memo.get(&key) {
            Some(v) => {
                let v = v.clone();
                self.push(v)
            }
            None => self.err(format!("memo key {key} was never stored")),
        }
    }

    // ---- globals, calls, persistent ids ----

    fn global(&self, module: &str, name: &str) -> Result<Global, PickleError> {
        match (module, name) {
            ("collections", "OrderedDict") => Ok(Global::OrderedDict),
            ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensorV2),
            ("torch._utils", "_rebuild_parameter") => Ok(Global::RebuildParameter),
            ("torch", "FloatStorage") => Ok(Global::Storage(DType::F32)),
            ("torch", "HalfStorage") => Ok(Global::Storage(DType::F16)),
            ("torch", "BFloat16Storage") => Ok(Global::Storage(DType::BF16)),
            _ => Err(PickleError::ForbiddenGlobal {
                module: module.to_owned(),
                name: name.to_owned(),
            }),
        }
    }

    /// REDUCE: `callable(*args)` for the allowed callables.
    fn call(&self, callable: Value, args: Value) -> Result<Value, PickleError> {
        let Value::Global(global) = callable else {
            return self.err(format!("REDUCE on type {}, not a global", callable.kind()));
        };
        let Value::Tuple(args) = args else {
            return self.err(format!(
                "REDUCE arguments are of type {}, not a tuple",
                args.kind()
            ));
        };
        let args = args.items.as_slice();
        match global {
            Global::OrderedDict if args.is_empty() => Ok(Value::Dict(Rc::default())),
            Global::OrderedDict => self.err("OrderedDict called with arguments"),
            Global::RebuildTensorV2 => self.rebuild_tensor(args),
            Global::RebuildParameter => match args.first() {
                Some(Value::Tensor(t)) if args.len() == 3 => Ok(Value::Tensor(t.clone())),
                _ => self.err("_rebuild_parameter expects (tensor, requires_grad, hooks)"),
            },
            Global::Storage(_) => self.err("a storage type is called"),
        }
    }

    fn non_negative(&self, value: &Value, what: &str) -> Result<u64, PickleError> {
        match value {
            Value::Int(i) if *i >= 0 => Ok(*i as u64),
            Value::Int(i) => self.err(format!("{what} is negative ({i})")),
            other => self.err(format!("{what} is of type {}, not an int", other.kind())),
        }
    }

    fn dims(&self, value: &Value, what: &str) -> Result<Vec<usize>, PickleError> {
        let Value::Tuple(t) = value else {
            return self.err(format!("{what} is of type {}, not a tuple", value.kind()));
        };
        if t.items.len() > MAX_DIMS {
            return self.err(format!("{what} has more than {MAX_DIMS} dimensions"));
        }
        t.items
            .iter()
            .map(|v| {
                let d = self.non_negative(v, what)?;
                usize::try_from(d).or_else(|_| self.err(format!("{what} entry {d} is too large")))
            })
            .collect()
    }

    /// `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
    /// backward_hooks[, metadata])`.
    fn rebuild_tensor(&self, args: &[Value]) -> Result<Value, PickleError> {
        let [storage, offset, size, stride, requires_grad, hooks, rest @ ..] = args else {
            return self.err(format!("_rebuild_tensor_v2 with {} arguments", args.len()));
        };
        if rest.len() > 1 {
            return self.err(format!("_rebuild_tensor_v2 with {} arguments", args.len()));
        }
        let Value::Storage(storage) = storage else {
            return self.err(format!("tensor storage is of type {}", storage.kind()));
        };
        let offset = self.non_negative(offset, "storage_offset")?;
        let shape = self.dims(size, "size")?;
        let strides = self.dims(stride, "stride")?;
        if shape.len() != strides.len() {
            return self.err(format!(
                "size has {} dimensions but stride has {}",
                shape.len(),
                strides.len()
            ));
        }
        if !matches!(requires_grad, Value::Bool(_)) {
            return self.err("requires_grad is not a bool");
        }
        if !matches!(hooks, Value::Dict(_) | Value::None) {
            return self.err("backward_hooks is not a dict");
        }
        Ok(Value::Tensor(Rc::new(TensorObj {
            storage: storage.clone(),
            offset,
            shape,
            strides,
        })))
    }

    /// BINPERSID: `('storage', storage_type, key, location, numel)`.
    fn persistent_load(&self, pid: Value) -> Result<StorageRef, PickleError> {
        let Value::Tuple(pid) = pid else {
            return self.err(format!(
                "persistent id is of type {}, not a tuple",
                pid.kind()
            ));
        };
        match pid.items.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), Value::Str(_location), numel]
                if &**tag == "storage" =>
            {
                Ok(StorageRef {
                    dtype: *dtype,
                    key: key.to_string(),
                    numel: self.non_negative(numel, "storage numel")?,
                })
            }
            _ => self.err(
                "persistent id is not ('storage', torch.<Float|Half|BFloat16>Storage, key, \
                 location, numel)",
            ),
        }
    }

    // ---- the main loop ----

    /// Runs to STOP and returns the unpickled object.
    fn run(&mut self) -> Result<Value, PickleError> {
        loop {
            self.op_start = self.pos;
            if self.pos >= self.data.len() {
                return self.err("pickle ends without STOP");
            }
            let op = self.byte()?;
            match op {
                // PROTO
                0x80 => {
                    let proto = self.byte()?;
                    if proto > 5 {
                        return self.err(format!("pickle protocol {proto}"));
                    }
                }
                // FRAME: a length hint only.
                0x95 => {
                    self.take(8)?;
                }
                b'}' => self.push(Value::Dict(Rc::default()))?,
                b']' => self.push(Value::List(Rc::default()))?,
                b')' => self.push(Value::Tuple(Rc::default()))?,
                b'(' => {
                    if self.marks.len() >= MAX_MARKS {
                        return self.err(format!("more than {MAX_MARKS} open MARKs"));
                    }
                    self.marks.push(self.stack.len());
                }
                // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                b'X' => {
                    let len = self.u32()?;
                    let s = self.string(u64::from(len))?;
                    self.push(s)?;
                }
                0x8c => {
                    let len = self.byte()?;
                    let s = self.string(u64::from(len))?;
                    self.push(s)?;
                }
                0x8d => {
                    let len = u64::from_le_bytes(self.array()?);
                    let s = self.string(len)?;
                    self.push(s)?;
                }
                // BININT, BININT1, BININT2, LONG1
                b'J' => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'K' => {
                    let v = self.byte()?;
                    self.push(Value::Int(i64::from(v)))?;
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Value::Int(i64::from(v)))?;
                }
                0x8a => {
                    let n = usize::from(self.byte()?);
                    if n > 8 {
                        return self.err(format!("LONG1 of {n} bytes does not fit 64 bits"));
                    }
                    let bytes = self.take(n)?;
                    // Little-endian two's complement, sign-extended to 8 bytes.
                    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
                    let mut full = [if negative { 0xff } else { 0 }; 8];
                    full.get_mut(..n).unwrap_or_default().copy_from_slice(bytes);
                    self.push(Value::Int(i64::from_le_bytes(full)))?;
                }
                // BINFLOAT (big-endian)
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Value::Float(v))?;
                }
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'N' => self.push(Value::None)?,
                // TUPLE, TUPLE1, TUPLE2, TUPLE3
                b't' => {
                    let items = self.pop_mark()?;
                    let t = self.seq(items)?;
                    self.push(Value::Tuple(t))?;
                }
                0x85..=0x87 => {
                    let items = self.pop_n(usize::from(op - 0x84))?;
                    let t = self.seq(items)?;
                    self.push(Value::Tuple(t))?;
                }
                // GLOBAL, STACK_GLOBAL
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = self.global(&module, &name)?;
                    self.push(Value::Global(g))?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return self.err("STACK_GLOBAL operands are not strings");
                    };
                    let g = self.global(&module, &name)?;
                    self.push(Value::Global(g))?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.call(callable, args)?;
                    self.push(v)?;
                }
                // BUILD: only `OrderedDict.__setstate__` (e.g. a state dict's `_metadata`
                // attribute), which carries no tensors and is ignored.
                b'b' => {
                    let _state = self.pop()?;
                    match self.top()? {
                        Value::Dict(_) => {}
                        other => return self.err(format!("BUILD on type {}", other.kind())),
                    }
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.dict_extend(vec![(key, value)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return self.err("SETITEMS with an odd number of values");
                    }
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    self.dict_extend(pairs)?;
                }
                b'a' => {
                    let value = self.pop()?;
                    self.list_extend(vec![value])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.list_extend(items)?;
                }
                // BINPUT, LONG_BINPUT, MEMOIZE, BINGET, LONG_BINGET
                b'q' => {
                    let key = self.byte()?;
                    self.memo_put(u32::from(key))?;
                }
                b'r' => {
                    let key = self.u32()?;
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = u32::try_from(self.memo.len()).unwrap_or(u32::MAX);
                    self.memo_put(key)?;
                }
                b'h' => {
                    let key = self.byte()?;
                    self.memo_get(u32::from(key))?;
                }
                b'j' => {
                    let key = self.u32()?;
                    self.memo_get(key)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_load(pid)?;
                    self.push(Value::Storage(Rc::new(storage)))?;
                }
                b'.' => return self.pop(),
                other => {
                    return self.err(format!("unsupported pickle opcode 0x{other:02x}"));
                }
            }
        }
    }
}

/// The state dict: a dict of `name -> tensor`.
fn into_state_dict(root: Value, end: usize) -> Result<Vec<PickledTensor>, PickleError> {
    let err = |reason: String| PickleError::Malformed {
        offset: end,
        reason,
    };
    let Value::Dict(dict) = root else {
        return Err(err(format!(
            "the pickle holds type {}, not a state dict",
            root.kind()
        )));
    };
    let mut seen = HashSet::new();
    let mut tensors = Vec::with_capacity(dict.items.len());
    for (key, value) in &dict.items {
        let Value::Str(name) = key else {
            return Err(err(format!("state-dict key is of type {}", key.kind())));
        };
        let Value::Tensor(t) = value else {
            return Err(err(format!(
                "state-dict entry {name} is of type {}, not a tensor",
                value.kind()
            )));
        };
        if !seen.insert(name.clone()) {
            return Err(err(format!("state-dict key {name} appears twice")));
        }
        tensors.push(PickledTensor {
            name: name.to_string(),
            storage: (*t.storage).clone(),
            offset: t.offset,
            shape: t.shape.clone(),
            strides: t.strides.clone(),
        });
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed(data: &[u8]) -> String {
        match load_state_dict(data) {
            Err(PickleError::Malformed { reason, .. }) => reason,
            other => panic!("expected a malformed-pickle error, got {other:?}"),
        }
    }

    #[test]
    fn empty_dict() {
        assert_eq!(load_state_dict(b"\x80\x02}q\x00.").unwrap(), vec![]);
        assert_eq!(
            load_state_dict(b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.").unwrap(),
            vec![]
        );
    }

    #[test]
    fn forbidden_global() {
        assert_eq!(
            load_state_dict(b"\x80\x02cos\nsystem\n.").unwrap_err(),
            PickleError::ForbiddenGlobal {
                module: "os".into(),
                name: "system".into()
            }
        );
        assert_eq!(
            load_state_dict(b"\x80\x02\x8c\x08builtins\x8c\x04eval\x93.").unwrap_err(),
            PickleError::ForbiddenGlobal {
                module: "builtins".into(),
                name: "eval".into()
            }
        );
    }

    #[test]
    fn hostile_inputs() {
        assert!(malformed(b"\x80\x02}").contains("without STOP"));
        assert!(malformed(b"\x80\x02.").contains("underflow"));
        assert!(malformed(b"\x80\x02(.").contains("underflow"));
        assert!(malformed(b"\x80\x02X\xff\xff\xff\x7f").contains("exceeds"));
        assert!(malformed(b"\x80\x02X\x10\x00\x00\x00ab").contains("truncated"));
        assert!(malformed(b"\x80\x02h\x07.").contains("never stored"));
        assert!(malformed(b"\x80\x02K\x01.").contains("not a state dict"));
        assert!(malformed(b"\x80\x02\x01").contains("opcode 0x01"));
        // Nesting: (((( ... )))) deeper than the bound.
        let mut deep = b"\x80\x02".to_vec();
        deep.extend(b"]q\x00");
        for _ in 0..MAX_DEPTH + 2 {
            deep.extend(b"h\x00\x85q\x00"); // t = (t,)
        }
        deep.push(b'.');
        assert!(malformed(&deep).contains("nested deeper"));
        // A stack that grows without bound.
        let mut wide = b"\x80\x02".to_vec();
        wide.extend(std::iter::repeat_n(b'N', MAX_STACK + 1));
        assert!(malformed(&wide).contains("stack deeper"));
    }

    #[test]
    fn long1_sign_extension() {
        // {'a': ...} would need a tensor; check LONG1 through a storage numel instead.
        let mut m = Machine {
            data: b"\x8a\x02\xff\x7f\x8a\x01\xff\x8a\x00.",
            pos: 0,
            op_start: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            copied: 0,
        };
        let _ = m.run();
        let ints: Vec<i64> = m
            .stack
            .iter()
            .filter_map(|v| match v {
                Value::Int(i) => Some(*i),
                _ => None,
            })
            .collect();
        assert_eq!(ints, vec![0x7fff, -1]);
    }
}
