//! Gemini translation tests.
