//! Keycode -> keysym -> key for the X11 backend: the keyboard mapping and the modifier state, both kept by this
//! backend itself.
//!
//! XInput2 raw events carry only a keycode: no modifier state, no group, no text. So this module keeps
//!
//! - the server's core keyboard mapping (`GetKeyboardMapping`: per keycode, the keysyms of group 1 level 1/2, group
//!   2 level 1/2, then group 1 level 3/4 as XKB exports them), replaced whenever the server says it changed;
//! - which modifier keys are down (Shift, Control, Alt/Meta/Super, AltGr) and the locks (Caps Lock, Num Lock),
//!   following the raw presses and releases themselves, started from the server's state when the backend starts;
//!
//! and turns each key press into an [`assemble::Key`](Key) for the shared line assembler: a character, Enter,
//! BackSpace, Tab, Escape, Ctrl+letter (`^C`), or a named key (`<LEFT>`, `<F5>`, `<Print>`). Alt+key becomes
//! Escape then the key, the way a terminal encodes it, so X11 and terminal input read alike (`<ESC>x`); Control
//! with a non-letter key is that key alone.
//!
//! The selection of the keysym follows the core protocol rules (with the XKB "Caps Lock and Shift cancel" choice
//! for letters): Shift picks level 2; Caps Lock inverts the case of alphabetic keys only; Num Lock inverts Shift
//! for keypad keys; AltGr (ISO_Level3_Shift / Mode_switch) picks level 3/4 when the key has one. What it does not
//! model: the keyboard group (layout switching with a group key), dead keys and compose sequences, input methods
//! (each produces the keys pressed, not the composed text), and per-key XKB types beyond those rules.

use std::collections::HashSet;

use xkeysym::Keysym;

use crate::keystroke::assemble::Key;

/// What a raw key event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stroke {
    /// Keys that produce input (one, or Escape and a key for Alt+key).
    Keys(Vec<Key>),
    /// A modifier or lock key, a release, or a key without a keysym: nothing to record.
    Nothing,
}

/// The modifier keys this backend follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Modifier {
    Shift,
    Control,
    Alt,
    Level3,
    CapsLock,
    NumLock,
    /// Super, Hyper, Scroll Lock and other modifier keysyms that change no text.
    Other,
}

fn modifier_of(sym: u32) -> Option<Modifier> {
    Some(match Keysym::new(sym) {
        Keysym::Shift_L | Keysym::Shift_R | Keysym::Shift_Lock => Modifier::Shift,
        Keysym::Control_L | Keysym::Control_R => Modifier::Control,
        Keysym::Alt_L | Keysym::Alt_R | Keysym::Meta_L | Keysym::Meta_R => Modifier::Alt,
        Keysym::ISO_Level3_Shift | Keysym::Mode_switch => Modifier::Level3,
        Keysym::Caps_Lock => Modifier::CapsLock,
        Keysym::Num_Lock => Modifier::NumLock,
        k if k.is_modifier_key() || (0xfe01..=0xfe0f).contains(&k.raw()) => Modifier::Other,
        _ => return None,
    })
}

/// The core keyboard mapping of one display.
#[derive(Debug, Clone, Default)]
pub struct Keymap {
    min_keycode: u8,
    per_keycode: usize,
    keysyms: Vec<u32>,
}

impl Keymap {
    /// A mapping from a `GetKeyboardMapping` reply that started at `min_keycode`.
    pub fn new(min_keycode: u8, keysyms_per_keycode: u8, keysyms: Vec<u32>) -> Keymap {
        Keymap { min_keycode, per_keycode: usize::from(keysyms_per_keycode), keysyms }
    }

    /// The keysyms of `keycode` (empty when outside the mapping).
    fn row(&self, keycode: u8) -> &[u32] {
        let Some(index) = keycode.checked_sub(self.min_keycode) else { return &[] };
        let start = usize::from(index) * self.per_keycode;
        self.keysyms.get(start..start + self.per_keycode).unwrap_or_default()
    }

    /// True when `keycode` is a Num_Lock key.
    pub fn is_num_lock(&self, keycode: u8) -> bool {
        self.base(keycode) == Keysym::Num_Lock.raw()
    }

    /// The keysym on the key's first level (what the key "is": `a`, `Shift_L`, `Return`).
    fn base(&self, keycode: u8) -> u32 {
        self.row(keycode).first().copied().unwrap_or(0)
    }
}

/// The keyboard state: which modifiers are down, which locks are on.
#[derive(Debug, Clone, Default)]
pub struct KeyboardState {
    keymap: Keymap,
    /// Keycodes down now (raw press seen, no release yet), to tell auto-repeat from a new press.
    down: HashSet<u8>,
    caps_lock: bool,
    num_lock: bool,
}

impl KeyboardState {
    /// A state over `keymap` with the locks as the server reports them.
    pub fn new(keymap: Keymap, caps_lock: bool, num_lock: bool) -> KeyboardState {
        KeyboardState { keymap, down: HashSet::new(), caps_lock, num_lock }
    }

    /// Replaces the mapping (after MappingNotify / XkbNewKeyboardNotify); held keys and locks stay.
    pub fn set_keymap(&mut self, keymap: Keymap) {
        self.keymap = keymap;
    }

    fn held(&self, m: Modifier) -> bool {
        self.down.iter().any(|&k| modifier_of(self.keymap.base(k)) == Some(m))
    }

    /// Follows a raw key release.
    pub fn release(&mut self, keycode: u8) {
        self.down.remove(&keycode);
    }

    /// Follows a raw key press and says what it typed.
    pub fn press(&mut self, keycode: u8) -> Stroke {
        let repeat = !self.down.insert(keycode);
        let base = self.keymap.base(keycode);
        match modifier_of(base) {
            Some(Modifier::CapsLock) if !repeat => self.caps_lock = !self.caps_lock,
            Some(Modifier::NumLock) if !repeat => self.num_lock = !self.num_lock,
            Some(_) => {}
            None => return self.key(keycode),
        }
        Stroke::Nothing
    }

    /// The key `keycode` types with the current modifiers.
    fn key(&self, keycode: u8) -> Stroke {
        let row = self.keymap.row(keycode);
        let shift = self.held(Modifier::Shift);
        let level3 = self.held(Modifier::Level3);
        let sym = select_keysym(row, shift, self.caps_lock, self.num_lock, level3);
        let Some(sym) = sym.filter(|&s| s != 0) else { return Stroke::Nothing };
        let ctrl = self.held(Modifier::Control);
        let alt = self.held(Modifier::Alt);
        let keys = render(Keysym::new(sym), ctrl, alt);
        if keys.is_empty() { Stroke::Nothing } else { Stroke::Keys(keys) }
    }
}

/// Picks the keysym of one key from its core mapping row (X11 core protocol §5, "Keyboards").
fn select_keysym(row: &[u32], shift: bool, caps_lock: bool, num_lock: bool, level3: bool) -> Option<u32> {
    let at = |i: usize| row.get(i).copied().filter(|&s| s != 0);
    // Group 1 is columns 0/1; XKB exports its level 3/4 as columns 4/5.
    let (lower, upper) = match (level3, at(4)) {
        (true, Some(l3)) => (l3, at(5)),
        _ => (at(0)?, at(1)),
    };
    let (lower, upper) = match upper {
        Some(u) => (lower, u),
        None => case_pair(lower),
    };
    let keypad = Keysym::new(upper).is_keypad_key();
    // Caps Lock applies to keys whose first level is a letter with a case (not to `1 !` or `Tab ISO_Left_Tab`).
    let alphabetic = {
        let (l, u) = case_pair(lower);
        l != u
    };
    let second = if keypad {
        shift ^ num_lock
    } else if alphabetic {
        shift ^ caps_lock
    } else {
        shift
    };
    Some(if second { upper } else { lower })
}

/// (lower, upper) of a keysym whose key lists only one: letters get their other case, others are both.
fn case_pair(sym: u32) -> (u32, u32) {
    let Some(c) = Keysym::new(sym).key_char() else { return (sym, sym) };
    let (lo, up) = (single(c.to_lowercase()), single(c.to_uppercase()));
    match (lo, up) {
        (Some(lo), Some(up)) if lo != up => (Keysym::from_char(lo).raw(), Keysym::from_char(up).raw()),
        _ => (sym, sym),
    }
}

fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
    let c = it.next()?;
    it.next().is_none().then_some(c)
}

/// Renders one keysym with the Control and Alt state into the keys it stands for (Alt+x is two: Escape, x).
fn render(sym: Keysym, ctrl: bool, alt: bool) -> Vec<Key> {
    let named = |name: &'static str| vec![Key::Named(name)];
    match sym {
        // Linefeed is Ctrl+J, which a terminal reads as Enter (xdotool types `\n` as Linefeed).
        Keysym::Return | Keysym::KP_Enter | Keysym::ISO_Enter | Keysym::Linefeed => vec![Key::Enter],
        Keysym::BackSpace => vec![Key::Backspace],
        Keysym::Tab | Keysym::KP_Tab | Keysym::ISO_Left_Tab => vec![Key::Tab],
        Keysym::Escape => vec![Key::Escape],
        Keysym::Delete | Keysym::KP_Delete => named("DEL"),
        Keysym::Left | Keysym::KP_Left => named("LEFT"),
        Keysym::Right | Keysym::KP_Right => named("RIGHT"),
        Keysym::Up | Keysym::KP_Up => named("UP"),
        Keysym::Down | Keysym::KP_Down => named("DOWN"),
        Keysym::Home | Keysym::KP_Home => named("HOME"),
        Keysym::End | Keysym::KP_End => named("END"),
        Keysym::Prior | Keysym::KP_Prior => named("PGUP"),
        Keysym::Next | Keysym::KP_Next => named("PGDN"),
        Keysym::Insert | Keysym::KP_Insert => named("INS"),
        s => match s.key_char().filter(|c| !c.is_control()) {
            Some(c) => {
                let key = match c.to_ascii_uppercase() {
                    u @ ('A'..='Z' | '@' | '[' | '\\' | ']' | '^' | '_') if ctrl => Key::Ctrl(u),
                    _ => Key::Char(c),
                };
                if alt { vec![Key::Escape, key] } else { vec![key] }
            }
            // A named key without text (F1, Print, Pause, Menu, multimedia keys): its keysym name.
            None => match s.name() {
                Some(name) => named(name.trim_start_matches("XK_")),
                None => Vec::new(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A US-like mapping: keycode 10 `a A`, 11 `1 exclam`, 12 Shift_L, 13 Caps_Lock, 14 Control_L, 15 Return,
    /// 16 BackSpace, 17 Tab, 18 `KP_End KP_1`, 19 Num_Lock, 20 `e E € ¢` (level 3), 21 ISO_Level3_Shift,
    /// 22 `b` only (upper case derived), 23 Left, 24 Alt_L.
    fn us() -> KeyboardState {
        let n = 0u32;
        let rows: [[u32; 6]; 15] = [
            [0x61, 0x41, n, n, n, n],
            [0x31, 0x21, n, n, n, n],
            [Keysym::Shift_L.raw(), n, n, n, n, n],
            [Keysym::Caps_Lock.raw(), n, n, n, n, n],
            [Keysym::Control_L.raw(), n, n, n, n, n],
            [Keysym::Return.raw(), n, n, n, n, n],
            [Keysym::BackSpace.raw(), n, n, n, n, n],
            [Keysym::Tab.raw(), Keysym::ISO_Left_Tab.raw(), n, n, n, n],
            [Keysym::KP_End.raw(), Keysym::KP_1.raw(), n, n, n, n],
            [Keysym::Num_Lock.raw(), n, n, n, n, n],
            [0x65, 0x45, 0x65, 0x45, Keysym::EuroSign.raw(), 0xa2],
            [Keysym::ISO_Level3_Shift.raw(), n, n, n, n, n],
            [0x62, n, n, n, n, n],
            [Keysym::Left.raw(), n, n, n, n, n],
            [Keysym::Alt_L.raw(), Keysym::Meta_L.raw(), n, n, n, n],
        ];
        KeyboardState::new(Keymap::new(10, 6, rows.concat()), false, false)
    }

    fn tap(s: &mut KeyboardState, k: u8) -> Stroke {
        let out = s.press(k);
        s.release(k);
        out
    }

    fn ch(c: char) -> Stroke {
        Stroke::Keys(vec![Key::Char(c)])
    }

    fn keys(k: &[Key]) -> Stroke {
        Stroke::Keys(k.to_vec())
    }

    #[test]
    fn shift_picks_level_two_and_caps_lock_only_changes_letters() {
        let mut s = us();
        assert_eq!(tap(&mut s, 10), ch('a'));
        assert_eq!(s.press(12), Stroke::Nothing);
        assert_eq!(tap(&mut s, 10), ch('A'));
        assert_eq!(tap(&mut s, 11), ch('!'));
        s.release(12);
        assert_eq!(tap(&mut s, 13), Stroke::Nothing, "Caps Lock types nothing");
        assert_eq!(tap(&mut s, 10), ch('A'));
        assert_eq!(tap(&mut s, 11), ch('1'), "Caps Lock leaves digits alone");
        s.press(12);
        assert_eq!(tap(&mut s, 10), ch('a'), "Shift cancels Caps Lock on letters");
        s.release(12);
        tap(&mut s, 13);
        assert_eq!(tap(&mut s, 10), ch('a'), "second Caps Lock press unlocks");
    }

    #[test]
    fn one_keysym_keys_get_their_upper_case_derived() {
        let mut s = us();
        assert_eq!(tap(&mut s, 22), ch('b'));
        s.press(12);
        assert_eq!(tap(&mut s, 22), ch('B'));
    }

    #[test]
    fn control_keys_are_rendered_as_documented() {
        let mut s = us();
        assert_eq!(tap(&mut s, 15), keys(&[Key::Enter]));
        assert_eq!(tap(&mut s, 16), keys(&[Key::Backspace]));
        assert_eq!(tap(&mut s, 17), keys(&[Key::Tab]));
        assert_eq!(tap(&mut s, 23), keys(&[Key::Named("LEFT")]));
        s.press(14);
        assert_eq!(tap(&mut s, 10), keys(&[Key::Ctrl('A')]));
        assert_eq!(tap(&mut s, 11), ch('1'), "Control with a digit is the digit, as in a terminal");
        assert_eq!(tap(&mut s, 23), keys(&[Key::Named("LEFT")]));
        s.release(14);
        s.press(24);
        assert_eq!(tap(&mut s, 10), keys(&[Key::Escape, Key::Char('a')]), "Alt+a reads as a terminal sends it");
    }

    #[test]
    fn num_lock_switches_the_keypad_and_level3_picks_the_third_level() {
        let mut s = us();
        assert_eq!(tap(&mut s, 18), keys(&[Key::Named("END")]));
        tap(&mut s, 19);
        assert_eq!(tap(&mut s, 18), ch('1'));
        s.press(21);
        assert_eq!(tap(&mut s, 20), ch('€'));
        s.press(12);
        assert_eq!(tap(&mut s, 20), ch('¢'));
    }

    #[test]
    fn auto_repeat_types_again_but_does_not_toggle_locks() {
        let mut s = us();
        assert_eq!(s.press(10), ch('a'));
        assert_eq!(s.press(10), ch('a'), "a held key repeats");
        s.release(10);
        s.press(13);
        s.press(13);
        s.release(13);
        assert_eq!(tap(&mut s, 10), ch('A'), "a repeated Caps Lock press toggles once");
    }

    #[test]
    fn keycodes_outside_the_mapping_type_nothing() {
        let mut s = us();
        assert_eq!(tap(&mut s, 9), Stroke::Nothing);
        assert_eq!(tap(&mut s, 250), Stroke::Nothing);
    }
}
