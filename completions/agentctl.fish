# fish completion for agentctl(1). Commands, subcommands and options come from
# `agentctl --help` (generated from agentd's method table), sandbox ids from
# `agentctl ps`, task names from `agentctl tasks`.

function __agentctl_ctl
    set -l tokens (commandline -opc)
    set -l ctl $tokens[1]
    set -l i 2
    while test $i -lt (count $tokens)
        if test "$tokens[$i]" = --socket
            set ctl $ctl --socket $tokens[(math $i + 1)]
        end
        set i (math $i + 1)
    end
    printf '%s\n' $ctl
end

# The usage part of each line of --help, tab, its summary.
function __agentctl_usage
    set -l ctl (__agentctl_ctl)
    $ctl --help 2>/dev/null | awk '/^  [a-z]/ { u = ""; for (i = 1; i <= NF; i++) { if ($i ~ /^[A-Z][a-z]/ || $i ~ /^\(/) break; u = u " " $i }; s = ""; for (; i <= NF; i++) s = s " " $i; print substr(u, 2) "\t" substr(s, 2) }'
end

function __agentctl_ids
    set -l ctl (__agentctl_ctl)
    $ctl ps 2>/dev/null | awk 'NR > 1 { print $1 "\t" $3 " " $2 }'
end

function __agentctl_tasks
    set -l ctl (__agentctl_ctl)
    $ctl tasks 2>/dev/null | awk 'NR > 1 { print $1 }'
end

function __agentctl_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    set -l usage (__agentctl_usage | string replace -r '\t.*' '')
    set -l cmd
    set -l sc
    set -l subs
    set -l skip 0
    set -l dashdash 0
    set -l after_dd 0
    set -l npos 0
    set -l opts
    set -l argopts
    set -l pos
    set -l prev $tokens[-1]
    for w in $tokens[2..-1]
        if test $skip = 1
            set skip 0
            continue
        end
        if test $dashdash = 1
            set after_dd (math $after_dd + 1)
            continue
        end
        if test -z "$cmd"
            switch $w
                case --socket
                    set skip 1
                case '-*'
                case '*'
                    set cmd $w
                    set subs (printf '%s\n' $usage | awk -v c=$cmd '$1 == c && $2 ~ /^[a-z]/ { print $2 }')
            end
            continue
        end
        if test (count $subs) -gt 0 -a -z "$sc"; and not string match -q -- '-*' $w
            set sc $w
            continue
        end
        if test (count $opts) -eq 0 -a (count $pos) -eq 0
            set -l shape (printf '%s\n' $usage | awk -v cmd=$cmd -v sc="$sc" '
                $1 != cmd { next }
                sc != "" && $2 != sc { next }
                { for (i = (sc != "") ? 3 : 2; i <= NF; i++) { t = $i; gsub(/[][|]/, "", t); if (t == "" || t == "--") continue
                    if (t ~ /^-/) { print "o " t; n = $(i + 1); gsub(/[][|]/, "", n); if (n ~ /^[A-Z]/) { print "a " t; i++ } }
                    else if (t ~ /^[A-Z]/) print "p " t } }')
            set opts (string replace -f -r '^o ' '' -- $shape)
            set argopts (string replace -f -r '^a ' '' -- $shape)
            set pos (string replace -f -r '^p ' '' -- $shape)
        end
        switch $w
            case --
                set dashdash 1
            case '-*'
                contains -- $w $argopts; and set skip 1
            case '*'
                set npos (math $npos + 1)
        end
    end
    if test -z "$cmd"
        if test "$prev" = --socket
            __fish_complete_path $cur
            return
        end
        __agentctl_usage | awk -F '\t' '{ split($1, w, " "); if (!seen[w[1]]++) print w[1] "\t" $2 }'
        printf '%s\n' --socket --json --help
        return
    end
    if test $dashdash = 1
        if test $after_dd = 0
            __fish_complete_command $cur
        else
            __fish_complete_path $cur
        end
        return
    end
    if test (count $subs) -gt 0 -a -z "$sc"
        printf '%s\n' $subs
        return
    end
    if test (count $opts) -eq 0 -a (count $pos) -eq 0
        set -l shape (printf '%s\n' $usage | awk -v cmd=$cmd -v sc="$sc" '
            $1 != cmd { next }
            sc != "" && $2 != sc { next }
            { for (i = (sc != "") ? 3 : 2; i <= NF; i++) { t = $i; gsub(/[][|]/, "", t); if (t == "" || t == "--") continue
                if (t ~ /^-/) { print "o " t; n = $(i + 1); gsub(/[][|]/, "", n); if (n ~ /^[A-Z]/) { print "a " t; i++ } }
                else if (t ~ /^[A-Z]/) print "p " t } }')
        set opts (string replace -f -r '^o ' '' -- $shape)
        set argopts (string replace -f -r '^a ' '' -- $shape)
        set pos (string replace -f -r '^p ' '' -- $shape)
    end
    switch $prev
        case --task
            __agentctl_tasks
            return
        case --sandbox
            __agentctl_ids
            return
        case --workspace
            __fish_complete_directories $cur
            return
        case --signal
            printf '%s\n' TERM KILL INT HUP QUIT USR1 USR2 STOP CONT
            return
        case -o '--*-file'
            __fish_complete_path $cur
            return
    end
    if contains -- $prev $argopts
        return
    end
    if string match -q -- '-*' $cur
        printf '%s\n' $opts | sort -u
        return
    end
    set -l want $pos[(math $npos + 1)]
    if test -z "$want"; and test (count $pos) -gt 0; and string match -q -- '*...' $pos[-1]
        set want $pos[-1]
    end
    switch "$want"
        case ID
            __agentctl_ids
        case NAME
            __agentctl_tasks
        case 'PATH*' 'FILE*' 'DIR*'
            __fish_complete_path $cur
    end
end

complete -c agentctl -f -a '(__agentctl_complete)'
