//! The template (TDL) library. (Being built: see issue "Templates: the full TDL language".)
