# kiln image spec 'none', revision 438e70f5
FROM ubuntu@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
