/*
 * subject.c: walk the Subject of a DER certificate.  Its input comes from
 * the peer: every length is checked against what is left of the element
 * that encloses it.
 *
 *	Certificate  ::= SEQUENCE { tbsCertificate, ... }
 *	TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber
 *	    INTEGER, signature SEQUENCE, issuer Name, validity SEQUENCE,
 *	    subject Name, ... }
 *	Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
 */
#include "subject.h"

#define DER_INTEGER	0x02
#define DER_OID		0x06
#define DER_SEQUENCE	0x30
#define DER_SET		0x31
#define DER_VERSION	0xa0	/* [0] EXPLICIT, constructed */

/* The unread part of an element's contents. */
struct der {
	const uint8_t	*d_p;
	size_t		 d_n;
};

/*
 * Take one element off the front of d: its tag into *tag and its contents
 * into *val.  0, or -1 when it does not fit in d (or uses a form no
 * certificate name needs: high tag numbers, indefinite or > 4-byte
 * lengths).
 */
static int
der_next(struct der *d, int *tag, struct der *val)
{
	size_t len, hdr = 2, nb;

	if (d->d_n < 2 || (d->d_p[0] & 0x1f) == 0x1f)
		return (-1);
	*tag = d->d_p[0];
	len = d->d_p[1];
	if (len & 0x80) {
		nb = len & 0x7f;
		if (nb == 0 || nb > 4 || nb > d->d_n - 2)
			return (-1);
		for (len = 0; nb > 0; nb--)
			len = len << 8 | d->d_p[hdr++];
	}
	if (len > d->d_n - hdr)
		return (-1);
	val->d_p = d->d_p + hdr;
	val->d_n = len;
	d->d_p += hdr + len;
	d->d_n -= hdr + len;
	return (0);
}

/* Take one element of tag want off d (its contents into *val, if given). */
static int
der_take(struct der *d, int want, struct der *val)
{
	struct der v;
	int tag;

	if (der_next(d, &tag, &v) == -1 || tag != want)
		return (-1);
	if (val != NULL)
		*val = v;
	return (0);
}

int
subject_each(const uint8_t *der, size_t len, subject_attr_cb *cb, void *arg)
{
	struct der d = { der, len }, cert, tbs, name, rdn, atv, oid, val;
	int tag;

	if (der_take(&d, DER_SEQUENCE, &cert) == -1 ||
	    der_take(&cert, DER_SEQUENCE, &tbs) == -1)
		return (-1);
	if (tbs.d_n > 0 && tbs.d_p[0] == DER_VERSION &&
	    der_take(&tbs, DER_VERSION, NULL) == -1)
		return (-1);
	if (der_take(&tbs, DER_INTEGER, NULL) == -1 ||	/* serialNumber */
	    der_take(&tbs, DER_SEQUENCE, NULL) == -1 ||	/* signature */
	    der_take(&tbs, DER_SEQUENCE, NULL) == -1 ||	/* issuer */
	    der_take(&tbs, DER_SEQUENCE, NULL) == -1 ||	/* validity */
	    der_take(&tbs, DER_SEQUENCE, &name) == -1)	/* subject */
		return (-1);
	while (name.d_n > 0) {
		/* An RDN is a non-empty SET of attributes. */
		if (der_take(&name, DER_SET, &rdn) == -1 || rdn.d_n == 0)
			return (-1);
		while (rdn.d_n > 0) {
			if (der_take(&rdn, DER_SEQUENCE, &atv) == -1 ||
			    der_take(&atv, DER_OID, &oid) == -1 ||
			    der_next(&atv, &tag, &val) == -1 || atv.d_n != 0)
				return (-1);
			cb(arg, oid.d_p, oid.d_n, tag, val.d_p, val.d_n);
		}
	}
	return (0);
}
