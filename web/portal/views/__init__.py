"""The portal's pages: account (sign-in, language, own password and tokens), researcher,
admin, operator."""
