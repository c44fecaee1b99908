/* utf8.h - UTF-8 decoding/encoding and the Unicode classes tokenizers split on */
#ifndef QBAKE_UTF8_H
#define QBAKE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Character classes, as the pre-tokenizer regexes use them (\p{L}, \p{N}, \s). */
enum {
	UTF8_LETTER = 1,     /* general category L* */
	UTF8_NUMBER = 2,     /* general category N* */
	UTF8_OTHER = 4,      /* any other assigned code point */
	UTF8_SPACE = 8       /* the White_Space property (what \s matches); may be set with OTHER */
};

/* Byte length of the UTF-8 sequence that starts with byte c, judged by its high nibble
 * only (1 for ASCII and stray continuation bytes, 2, 3 or 4), as llama.cpp does. */
size_t utf8_len(unsigned char c);
/* Decodes one code point at s[*off] (n bytes in all) and advances *off. An invalid or
 * truncated sequence yields U+FFFD and advances one byte. */
uint32_t utf8_decode(const char *s, size_t n, size_t *off);
/* Writes cp as UTF-8 into out (4 bytes room); returns the byte count (0 if cp > 0x10FFFF). */
size_t utf8_encode(uint32_t cp, char *out);
/* Offset of the first byte of s[0..n) that does not start a well-formed UTF-8 sequence
 * (overlong forms, surrogates and code points above U+10FFFF are ill-formed), or n. */
size_t utf8_check(const char *s, size_t n);
/* The UTF8_* class bits of cp (0 for unassigned code points). */
unsigned utf8_class(uint32_t cp);

#endif
