//! imagefactory host
