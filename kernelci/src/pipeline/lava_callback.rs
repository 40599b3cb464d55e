//! The LAVA callback receiver: callback bodies into node result hierarchies.
