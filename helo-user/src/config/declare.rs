//! [`options!`]: each agent option declared once, as one row giving its key, its
//! flag, its default and its help, from which the config struct, its defaults, the command line's
//! flags and the merge of the two are all generated. A new option is one row.
//!
//! A row is
//!
//! ```text
//! /// The help text (also the field's documentation).
//! #[serde(...)]               // optional: how the file spells or parses it
//! #[arg(...)]                 // optional: the flag (clap), for rows with a flag type
//! GROUP field: Type = default, flag: FlagType;
//! ```
//!
//! where GROUP says which flag struct takes the flag: `run` (`helo run` only), `fact` (the server
//! facts `run` and `classify` share), or `file` (a key with no flag: no `#[arg]`, no flag type).
//! The flag type says how a flag lays over the file's value ([`LayOver`]): `Option<T>` replaces
//! when given, `Vec<T>` replaces when given at least once, `bool` switches on.

/// How a flag given on the command line lays over the value from the config file (or the default).
pub trait LayOver<Slot> {
    fn lay_over(self, slot: &mut Slot);
}

/// A single-valued flag replaces the file's value when given.
impl<T> LayOver<T> for Option<T> {
    fn lay_over(self, slot: &mut T) {
        if let Some(v) = self {
            *slot = v;
        }
    }
}

/// An optional key (no value unless set): the flag, when given, sets it.
impl<T> LayOver<Option<T>> for Option<T> {
    fn lay_over(self, slot: &mut Option<T>) {
        if self.is_some() {
            *slot = self;
        }
    }
}

/// A repeatable flag replaces the file's whole list when given at least once.
impl<T> LayOver<Vec<T>> for Vec<T> {
    fn lay_over(self, slot: &mut Vec<T>) {
        if !self.is_empty() {
            *slot = self;
        }
    }
}

/// A switch can only turn on what the file left off.
impl LayOver<bool> for bool {
    fn lay_over(self, slot: &mut bool) {
        *slot |= self;
    }
}

/// Declares the configuration struct and the flag structs from one table of rows (see the module
/// documentation for a row's form).
macro_rules! options {
    (
        $(#[$meta:meta])*
        pub struct $config:ident;
        run flags: $run:ident;
        fact flags: $fact:ident;
        $(
            $(#[doc = $doc:literal])*
            $(#[serde($($serde:tt)*)])*
            $(#[arg($($arg:tt)*)])?
            $group:ident $field:ident: $ty:ty = $default:expr $(, flag: $flag:ty)?;
        )*
    ) => {
        $(#[$meta])*
        pub struct $config {
            $( $(#[doc = $doc])* $(#[serde($($serde)*)])* pub $field: $ty, )*
        }

        impl Default for $config {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        $crate::config::declare::options!(@flags $config $run run [] [] $( { $group [$(#[doc = $doc])*] [$($($arg)*)?] $field $($flag)? } )*);
        $crate::config::declare::options!(@flags $config $fact fact [] [] $( { $group [$(#[doc = $doc])*] [$($($arg)*)?] $field $($flag)? } )*);
    };

    // Every row seen: the flag struct, and its merge field by field.
    (@flags $config:ident $name:ident $group:tt [$($decl:tt)*] [$($f:ident)*]) => {
        #[derive(clap::Args, Debug, Clone, Default)]
        pub struct $name { $($decl)* }

        impl $name {
            /// Lays each flag that was given over `config`'s value (the file's, or the default).
            pub fn lay_over(self, config: &mut $config) {
                $( $crate::config::declare::LayOver::lay_over(self.$f, &mut config.$f); )*
            }
        }
    };
    // A row of this struct's group: its flag.
    (@flags $config:ident $name:ident run [$($decl:tt)*] [$($f:ident)*]
        { run [$($doc:tt)*] [$($arg:tt)*] $field:ident $flag:ty } $($rest:tt)*) => {
        $crate::config::declare::options!(@flags $config $name run [$($decl)* $($doc)* #[arg($($arg)*)] pub $field: $flag,] [$($f)* $field] $($rest)*);
    };
    (@flags $config:ident $name:ident fact [$($decl:tt)*] [$($f:ident)*]
        { fact [$($doc:tt)*] [$($arg:tt)*] $field:ident $flag:ty } $($rest:tt)*) => {
        $crate::config::declare::options!(@flags $config $name fact [$($decl)* $($doc)* #[arg($($arg)*)] pub $field: $flag,] [$($f)* $field] $($rest)*);
    };
    // Another group's row, or a key with no flag.
    (@flags $config:ident $name:ident $group:tt [$($decl:tt)*] [$($f:ident)*] { $($skip:tt)* } $($rest:tt)*) => {
        $crate::config::declare::options!(@flags $config $name $group [$($decl)*] [$($f)*] $($rest)*);
    };
}

pub(crate) use options;
